"""Telemetry bench: 8 robots publish live frames at the control rate; one websocket client
(in its own process, as a browser would be) subscribes to all of them.

    python -m bench.telemetry [--robots 8] [--seconds 10] [--rate 0] [--image-size 64]

The control loop steps 8 tabletop simulators (random actions, rendering on), JPEG-encodes
every robot's frame and publishes it through ``core.worker.telemetry.TelemetryHub`` on a real
websocket server, as the worker does (policy inference is left out: it is the same with or
without telemetry). ``--rate 0`` runs the loop as fast as the simulators go; ``--rate HZ``
paces it. Three phases of ``--seconds`` each:

1. no client (the loop's own rate);
2. one healthy client: frames/s it receives per robot (target >= 15);
3. the same client plus a stalled one (connected, never reads): the loop's rate must not
   drop, the stalled client only loses frames.

Last line: ``RESULT {json}``.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import socket
import statistics
import time
from typing import Any

import numpy as np

from bench.common import print_result


def client_process(url: str, seconds: float, out_q, ready) -> None:
    """A subscriber to every robot: counts frames per robot for ``seconds`` after the first."""
    from websockets.sync.client import connect

    counts: dict[str, int] = {}
    lat: list[float] = []
    with connect(url, compression=None, max_size=2**24) as ws:
        json.loads(ws.recv(10))  # hello
        ready.set()
        t0 = None
        while True:
            try:
                m = json.loads(ws.recv(1.0))
            except TimeoutError:
                if t0 is not None:
                    break
                continue
            if m.get("type") != "frame":
                continue
            now = time.time()
            if t0 is None:
                t0 = time.monotonic()
            if time.monotonic() - t0 > seconds:
                break
            counts[m["robot"]] = counts.get(m["robot"], 0) + 1
            lat.append(now - m["time"])
    out_q.put({"counts": counts, "seconds": seconds, "latency_ms_p50": 1000 * statistics.median(lat) if lat else None,
               "latency_ms_p99": 1000 * sorted(lat)[int(0.99 * (len(lat) - 1))] if lat else None})


def stalled_client(url: str):
    """Handshake, then never read; a tiny receive window makes the server's socket back up."""
    from websockets.sync.client import connect

    host, port = url.split("//")[1].split("/")[0].split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    return connect(url, sock=sock, max_queue=1, compression=None, close_timeout=0.2, legacy=True)


def control_loop(envs, hub, seconds: float, rate: float, rng) -> dict[str, Any]:
    from core.worker.telemetry import encode_jpeg

    steps, times = 0, []
    t_end = time.perf_counter() + seconds
    period = 1.0 / rate if rate else 0.0
    next_t = time.perf_counter()
    ep_step = [0] * len(envs)
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        for i, env in enumerate(envs):
            obs, _, term, trunc, _ = env.step(rng.uniform(-1, 1, 2).astype(np.float32))
            ep_step[i] += 1
            if term or trunc:
                obs, _ = env.reset(seed=int(rng.integers(1 << 30)))
                ep_step[i] = 0
            hub.publish(f"robot-{i}", {"robot_id": i, "slot": i, "step": ep_step[i], "d": 10.0, "reward": 0.1,
                                       "detector": {"count": 0, "patience": 2, "threshold": 2.0, "fired": False},
                                       "checkpoint_id": 1, "episode_uid": f"bench-{i}", "episode_id": None,
                                       "instruction": obs["instruction"], "status": "running"},
                        encode_jpeg(obs["image"]))
        times.append(time.perf_counter() - t0)
        steps += 1
        if period:
            next_t += period
            time.sleep(max(0.0, next_t - time.perf_counter()))
    return {"steps_per_s": steps / seconds, "step_ms_p50": 1000 * statistics.median(times),
            "step_ms_p99": 1000 * sorted(times)[int(0.99 * (len(times) - 1))]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--robots", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=0.0, help="control rate in Hz (0 = as fast as possible)")
    ap.add_argument("--image-size", type=int, default=64)
    args = ap.parse_args(argv)

    from core.worker.telemetry import TelemetryHub, WebsocketServer
    from sim_backends.registry import make_env

    rng = np.random.default_rng(0)
    envs = [make_env("tabletop", {"family": "block2block", "image_size": args.image_size}) for _ in range(args.robots)]
    for i, e in enumerate(envs):
        e.reset(seed=i)
    from core.worker.access import ViewerAccess
    from storage.credentials import mint_viewer_ticket

    secret = "bench-worker-secret-" + "x" * 32
    hub = TelemetryHub(ViewerAccess(secret))
    srv = WebsocketServer({"/telemetry": hub.handler}, port=0)
    hub.attach(srv)
    srv.start()
    url = srv.url("/telemetry") + "?ticket=" + mint_viewer_ticket(secret, "bench", "bench")
    ctx = mp.get_context("spawn")
    result: dict[str, Any] = {"robots": args.robots, "image_size": args.image_size, "rate_hz": args.rate or None}
    try:
        print(f"phase 1: no client, {args.seconds:.0f} s", flush=True)
        result["no_client"] = control_loop(envs, hub, args.seconds, args.rate, rng)

        def with_client(stalled: bool) -> tuple[dict[str, Any], dict[str, Any], Any]:
            q, ready = ctx.Queue(), ctx.Event()
            p = ctx.Process(target=client_process, args=(url, args.seconds, q, ready), daemon=True)
            p.start()
            assert ready.wait(60), "client did not connect"
            st = stalled_client(url) if stalled else None
            while hub.n_clients < (2 if stalled else 1):
                time.sleep(0.01)
            loop = control_loop(envs, hub, args.seconds + 1.5, args.rate, rng)
            got = q.get(timeout=60)
            p.join(10)
            return loop, got, st

        for name, stalled in (("one_client", False), ("with_stalled_client", True)):
            print(f"phase: {name.replace('_', ' ')}, {args.seconds:.0f} s", flush=True)
            loop, got, st = with_client(stalled)
            per_robot = {r: c / got["seconds"] for r, c in sorted(got["counts"].items())}
            loop["client_fps_per_robot"] = per_robot
            loop["client_fps_min"] = min(per_robot.values()) if len(per_robot) == args.robots else 0.0
            loop["client_latency_ms_p50"], loop["client_latency_ms_p99"] = got["latency_ms_p50"], got["latency_ms_p99"]
            if st is not None:
                loop["stalled_client"] = max(hub.client_stats(), key=lambda c: c["dropped"], default={})
                st.close()
            result[name] = loop
    finally:
        srv.stop()
        for e in envs:
            e.close()
    base, stalled = result["no_client"]["steps_per_s"], result["with_stalled_client"]["steps_per_s"]
    result["fps_per_robot_min"] = result["with_stalled_client"]["client_fps_min"]
    result["target_fps_per_robot"] = 15
    result["target_met"] = result["one_client"]["client_fps_min"] >= 15 and result["fps_per_robot_min"] >= 15
    result["loop_rate_ratio_stalled_vs_none"] = stalled / base
    for k in ("no_client", "one_client", "with_stalled_client"):
        r = result[k]
        extra = f", client min {r['client_fps_min']:.1f} frames/s per robot" if "client_fps_min" in r else ""
        print(f"{k:>20}: loop {r['steps_per_s']:.1f} steps/s (p50 {r['step_ms_p50']:.1f} ms, p99 "
              f"{r['step_ms_p99']:.1f} ms){extra}", flush=True)
    print_result(result)
    return result


if __name__ == "__main__":
    main()

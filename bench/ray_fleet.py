"""Practice's rollout on the same K robots as a process fleet and as a Ray fleet.

    python -m bench.ray_fleet [--quick] [--robots K] [--rounds N] [--episodes E]

Two phases, each timing the two fleets in interleaved rounds (process, Ray, process, Ray ...;
medians), the fleets' start-up and one warm-up round outside the timed region:

1. one Ray node: Ray started on this machine (``RayFleet(address=None)``), robots placed on
   shares of its CPUs;
2. two Ray nodes: a local cluster of two raylets on loopback (``ray.cluster_utils.Cluster``),
   each offering K/2 ``dojo_robot`` slots, so half the robots live on each.

What is timed is what practice collects (as ``bench.throughput``'s practice figure): the policy
sampling actions batched across the fleet, the frozen reward model giving d(o, g) every frame,
the detector ending episodes, robot groups pipelined (``core.learning.rollout``); the models are
built untrained (speed does not depend on the weights). Steps/s = environment steps / seconds.
Both nodes of phase 2 share this machine's cores: the phase measures what crossing raylets costs,
not what more machines give (docs/cluster.md has that on paper).

The last line is ``RESULT {json}``: ``process_steps_per_s``, ``ray_steps_per_s``, ``ratio`` (Ray
over process, phase 1), ``nodes`` (1), ``robots``, and ``two_nodes`` with the same for phase 2.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from bench.common import print_result

ENV = {"family": "block2block"}
THRESHOLD = 3.0


def _models():
    import torch

    from core.learning.policy import DojoPolicy, PolicyConfig

    torch.manual_seed(0)
    return DojoPolicy(PolicyConfig()), DojoPolicy(PolicyConfig())


def _rate(policy, reward, fleet, seeds: list[int]) -> tuple[float, int]:
    import torch

    from core.learning.rollout import run_episodes
    from core.method.detector import DetectorSpec

    t0 = time.perf_counter()
    recs = run_episodes(policy, None, seeds, fleet=fleet, greedy=False, reward_model=reward,
                        stop_on_ground_truth=False, detector=DetectorSpec(THRESHOLD, 2),
                        generator=torch.Generator().manual_seed(seeds[0]))
    steps = sum(r.length for r in recs)
    return steps / (time.perf_counter() - t0), steps


def compare(label: str, make_ray, args, policy, reward) -> dict[str, Any]:
    """Interleaved rounds of the process fleet and the Ray fleet ``make_ray()`` makes."""
    from core.learning.fleets import ProcessFleet

    fleets = {"process": ProcessFleet("tabletop", ENV, args.robots)}
    t0 = time.perf_counter()
    fleets["ray"] = make_ray()
    start_s = time.perf_counter() - t0
    nodes = len(set(fleets["ray"].node_ids))
    print(f"[{label}] Ray fleet of {args.robots} up in {start_s:.1f} s on {nodes} node(s): "
          f"{sorted(set(fleets['ray'].nodes))}", flush=True)
    rates: dict[str, list[float]] = {"process": [], "ray": []}
    from core.learning.rollout import rollout_batch

    for model in (policy, reward):  # practice's compiled forward passes (the same batch on both fleets)
        model.compile_inference(rollout_batch(fleets["process"]), warm_up=True)
    try:
        for r in range(args.rounds + 1):  # round 0 warms up (compiled forward passes, caches)
            for kind in ("process", "ray") if r % 2 == 0 else ("ray", "process"):
                seeds = [1_000_000 * (r + 1) + i for i in range(args.episodes)]  # same seeds for both
                rate, steps = _rate(policy, reward, fleets[kind], seeds)
                if r:
                    rates[kind].append(rate)
                print(f"[{label}] round {r}{' (warm-up)' if r == 0 else ''} {kind}: {steps} steps, "
                      f"{rate:.0f} steps/s", flush=True)
    finally:
        for f in fleets.values():
            f.close()
    proc, ray_ = statistics.median(rates["process"]), statistics.median(rates["ray"])
    out = {"process_steps_per_s": round(proc, 1), "ray_steps_per_s": round(ray_, 1), "ratio": round(ray_ / proc, 3),
           "nodes": nodes, "robots": args.robots, "rounds": args.rounds, "episodes_per_round": args.episodes,
           "ray_start_s": round(start_s, 1), "process_rounds": [round(x) for x in rates["process"]],
           "ray_rounds": [round(x) for x in rates["ray"]]}
    print(f"[{label}] median process {proc:.0f} steps/s, Ray {ray_:.0f} steps/s: ratio {ray_ / proc:.3f}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ray_fleet", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 rounds of 8 episodes a fleet and phase (~4 min)")
    ap.add_argument("--robots", type=int, default=4, help="K robots in each fleet (default 4)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds a fleet and phase (default 6; quick 3)")
    ap.add_argument("--episodes", type=int, default=None, help="episodes a round (default 16; quick 8)")
    args = ap.parse_args(argv)
    args.rounds = args.rounds or (3 if args.quick else 6)
    args.episodes = args.episodes or (8 if args.quick else 16)
    import ray
    import torch
    from ray.cluster_utils import Cluster

    from core.learning.ray_fleet import ROBOT_RESOURCE, RayFleet

    torch.set_num_threads(1)  # the learner leaves the simulators a core (bench.throughput's best on 2 cores)
    policy, reward = _models()
    one = compare("one node", lambda: RayFleet("tabletop", ENV, args.robots), args, policy, reward)
    ray.shutdown()
    half = max(1, args.robots // 2)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {ROBOT_RESOURCE: half},
                                                            "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, resources={ROBOT_RESOURCE: args.robots - half})
        cluster.wait_for_nodes()
        two = compare("two nodes", lambda: RayFleet("tabletop", ENV, args.robots, address=cluster.address), args,
                      policy, reward)
    finally:
        ray.shutdown()
        cluster.shutdown()
    print_result({**one, "two_nodes": two})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

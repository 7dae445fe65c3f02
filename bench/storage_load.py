"""Storage load bench: 16 simulated robots writing episodes + 5 UI readers polling.

    python -m bench.storage_load                # 5 minutes (the issue's target)
    python -m bench.storage_load --quick        # 30 s
    python -m bench.storage_load --db postgresql://...   # or DATABASE_URL: the same on PostgreSQL

Each robot is its own process (the hardest case for SQLite locking: separate writers that
only the database serialises). Per episode it does what the worker does: ``start_episode``
(a running row), then ``finish_episode`` with ~30 steps and ~30 small JPEG frames in one
transaction, and every 10 episodes a job heartbeat and a metrics point. Robots write as fast
as they can unless --episode-interval paces them. Each reader process polls the UI's
page-load queries (review queue, success per checkpoint, episodes per hour, status counts,
robot summary, latest episodes, a curve and a frame, a metric series) every --poll-interval
seconds, and labels one queued episode every 20 polls (the review page writes too).

Counts "database is locked" errors (target: 0) and any other error, and checks at the end that
every reported episode is in the database exactly once with all its steps and frames.
Last line: ``RESULT {json}``.
"""
from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import print_result


def _frames(n: int, size: int = 64, seed: int = 0) -> list[bytes]:
    """Small JPEGs like a 64x64 camera: a gradient with a moving block (~1-2 KB each)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for t in range(n):
        img = np.zeros((size, size, 3), np.uint8)
        img[..., 0] = np.linspace(40, 200, size, dtype=np.uint8)[None, :]
        img[..., 1] = 90
        x = 4 + (t * 2) % (size - 16)
        img[20:32, x:x + 12] = (220, 30, 30)
        img = np.clip(img.astype(int) + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=80)
        out.append(buf.getvalue())
    return out


def _is_locked(e: BaseException) -> bool:
    return "database is locked" in str(e).lower() or "database table is locked" in str(e).lower()


def writer(idx: int, url: str, ids: dict, args: dict, deadline: float, out_q) -> None:
    from storage import repo
    from storage.db import Database, make_engine

    db = Database(make_engine(url))
    rng = np.random.default_rng(1000 + idx)
    frames = _frames(args["steps"], seed=idx)
    robot_id, job_id = ids["robots"][idx], ids["jobs"][idx]
    worker = f"bench-robot-{idx}"
    finish_lat, start_lat, written, locked, errors = [], [], [], 0, []
    ep = 0
    while time.time() < deadline:
        uid = f"bench-r{idx}-e{ep}"
        n = args["steps"]
        d = np.maximum(0.0, np.linspace(rng.uniform(15, 25), rng.uniform(-2, 6), n) + rng.normal(0, 0.5, n))
        success = bool(d[-1] <= 2.0)
        try:
            t0 = time.perf_counter()
            with db.write() as s:
                repo.start_episode(s, uid=uid, task_id=ids["task"], session_id=ids["session"], robot_id=robot_id,
                                   checkpoint_id=ids["checkpoints"][ep % len(ids["checkpoints"])], job_id=job_id,
                                   worker=worker, instruction="push the red cube to the blue moon", seed=ep,
                                   detector_threshold=2.0)
            t1 = time.perf_counter()
            steps = repo.steps_from_arrays(d=d, actions=rng.uniform(-1, 1, (n, 2)).round(4),
                                           rewards=np.append(d[:-1] - d[1:], 0.0),
                                           detector_counts=np.zeros(n, int), frame_every=1)
            with db.write() as s:
                res = repo.finish_episode(s, uid=uid, task_id=ids["task"], steps=steps, frames=frames,
                                          detector_success=success, detector_step=n - 1 if success else None,
                                          gt_success=success if rng.random() < 0.9 else not success)
            t2 = time.perf_counter()
            start_lat.append(t1 - t0)
            finish_lat.append(t2 - t1)
            if res.written:
                written.append(uid)
            if ep % 10 == 9:
                with db.write() as s:
                    repo.heartbeat(s, job_id, worker, progress=min(1.0, ep / 1000), message=f"episode {ep}")
                    repo.log_metrics(s, {"success": float(success), "final_d": float(d[-1])}, ep,
                                     session_id=ids["session"])
        except Exception as e:  # counted, never fatal: the bench measures them
            if _is_locked(e):
                locked += 1
            else:
                errors.append(f"{type(e).__name__}: {str(e)[:200]}")
        ep += 1
        if args["episode_interval"] > 0:
            time.sleep(args["episode_interval"] * rng.uniform(0.8, 1.2))
    db.dispose()
    out_q.put({"role": "writer", "finish_lat": finish_lat, "start_lat": start_lat, "written": written,
               "locked": locked, "errors": errors})


def reader(idx: int, url: str, ids: dict, args: dict, deadline: float, out_q) -> None:
    from storage import repo
    from storage.db import Database, make_engine
    from storage.models import User

    db = Database(make_engine(url))
    with db.read() as s:
        me = s.get(User, ids["reviewer"])
    rnd = random.Random(idx)
    lat: dict[str, list[float]] = {}
    locked, errors, polls, labels = 0, [], 0, 0

    def timed(name, fn):
        t0 = time.perf_counter()
        out = fn()
        lat.setdefault(name, []).append(time.perf_counter() - t0)
        return out

    while time.time() < deadline:
        try:
            with db.read() as s:
                timed("review_queue", lambda: repo.review_queue(s, limit=50))
                timed("success_by_checkpoint", lambda: repo.success_by_checkpoint(s, task_id=ids["task"]))
                timed("episodes_per_hour", lambda: repo.episodes_per_hour(s, hours=24))
                timed("status_counts", lambda: repo.status_counts(s))
                timed("robot_summary", lambda: repo.robot_summary(s, session_id=ids["session"]))
                latest = timed("list_episodes", lambda: repo.list_episodes(s, limit=50, status="finished"))
                if latest:
                    eid = latest[rnd.randrange(len(latest))].id
                    timed("episode_curve", lambda: repo.episode_curve(s, eid))
                    timed("get_frame", lambda: repo.get_frame(s, eid, rnd.randrange(args["steps"])))
                timed("metric_series", lambda: repo.metric_series(s, "success", session_id=ids["session"]))
            polls += 1
            if polls % 20 == 0:
                t0 = time.perf_counter()
                with db.write() as s:
                    q = repo.review_queue(s, limit=5)
                    if q:
                        repo.label_episode(s, q[rnd.randrange(len(q))].episode.id, rnd.random() < 0.5, actor=me)
                        labels += 1
                lat.setdefault("label (write)", []).append(time.perf_counter() - t0)
        except Exception as e:
            if _is_locked(e):
                locked += 1
            else:
                errors.append(f"{type(e).__name__}: {str(e)[:200]}")
        time.sleep(args["poll_interval"])
    db.dispose()
    out_q.put({"role": "reader", "lat": lat, "locked": locked, "errors": errors, "polls": polls, "labels": labels})


def _setup(url: str, n_robots: int) -> dict:
    from storage import repo
    from storage.db import init_db

    db = init_db(url)
    with db.write() as s:
        task = repo.get_or_create_task(s, "bench-push", "tabletop", {"n_blocks": 4}, detector_threshold=2.0,
                                       detector_patience=1, fleet_size=n_robots)
        session = repo.start_session(s, task.id, name="storage load bench")
        robots = [repo.register_robot(s, f"bench-sim-{i}", "sim", task_id=task.id).id for i in range(n_robots)]
        parent, cks = None, []
        for i in range(5):
            ck = repo.add_checkpoint(s, "sft" if i == 0 else "si", f"/bench/ck{i}.pt", parent_id=parent,
                                     task_id=task.id, iteration=i)
            cks.append(ck.id)
            parent = ck.id
        reviewer = repo.get_user(s, "bench-reviewer") or repo.create_user(s, "bench-reviewer", "bench-password",
                                                                           "reviewer")
        jobs = [repo.enqueue_job(s, "practice", {"robot": i}, session_id=session.id, task_id=task.id).id
                for i in range(n_robots)]
    with db.write() as s:
        for i in range(n_robots):
            repo.claim_job(s, f"bench-robot-{i}", kinds=["practice"])
        # claim order is by id; give each robot the job it claimed
        jobs = {j.claimed_by: j.id for j in repo.list_jobs(s, status="running", limit=1000)}
    ids = {"task": task.id, "session": session.id, "robots": robots, "checkpoints": cks, "reviewer": reviewer.id,
           "jobs": [jobs[f"bench-robot-{i}"] for i in range(n_robots)]}
    db.dispose()
    return ids


def _pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(xs) * 1000, q)), 2) if xs else None


def _verify(url: str, uids: list[str], steps: int) -> dict:
    from sqlalchemy import func, select

    from storage.db import Database, make_engine
    from storage.models import Episode, Frame, Step

    db = Database(make_engine(url))
    with db.read() as s:
        n_ep = s.scalar(select(func.count()).select_from(Episode).where(Episode.status == "finished"))
        n_dup = s.scalar(select(func.count()).select_from(
            select(Episode.uid).group_by(Episode.uid).having(func.count() > 1).subquery()))
        n_steps = s.scalar(select(func.count()).select_from(Step))
        n_frames = s.scalar(select(func.count()).select_from(Frame))
        frame_bytes = s.scalar(select(func.sum(func.length(Frame.data)))) or 0
        integrity = None
        if db.dialect == "sqlite":
            integrity = s.connection().exec_driver_sql("PRAGMA quick_check").scalar()
    db.dispose()
    return {"finished_in_db": int(n_ep), "reported": len(uids), "duplicate_uids": int(n_dup),
            "steps_ok": n_steps == steps * n_ep, "frames_ok": n_frames == steps * n_ep,
            "avg_frame_bytes": round(frame_bytes / max(1, n_frames)), "sqlite_quick_check": integrity}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--quick", action="store_true", help="30 seconds")
    p.add_argument("--db", help="database URL or SQLite path (default: DATABASE_URL, else a new temp SQLite file)")
    p.add_argument("--writers", type=int, default=16)
    p.add_argument("--readers", type=int, default=5)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--episode-interval", type=float, default=0.0,
                   help="seconds between a robot's episodes (0: as fast as it can)")
    p.add_argument("--poll-interval", type=float, default=0.25, help="seconds between a reader's page loads")
    a = p.parse_args(argv)
    seconds = 30.0 if a.quick else a.minutes * 60
    tmp = None
    url = a.db or os.environ.get("DATABASE_URL")
    if not url:
        tmp = tempfile.TemporaryDirectory(prefix="dojo-storage-load-")
        url = str(Path(tmp.name) / "load.sqlite")

    from storage.db import make_engine
    eng = make_engine(url)
    backend, shown = eng.dialect.name, eng.url.render_as_string(hide_password=True)
    eng.dispose()
    print(f"[storage_load] {backend} at {shown}: {a.writers} writers x {a.steps} steps, {a.readers} readers, "
          f"{seconds:.0f} s", flush=True)
    ids = _setup(url, a.writers)
    args = {"steps": a.steps, "episode_interval": a.episode_interval, "poll_interval": a.poll_interval}

    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    out_q = ctx.Queue()
    t_start = time.time()
    deadline = t_start + seconds
    procs = [ctx.Process(target=writer, args=(i, url, ids, args, deadline, out_q)) for i in range(a.writers)]
    procs += [ctx.Process(target=reader, args=(i, url, ids, args, deadline, out_q)) for i in range(a.readers)]
    for pr in procs:
        pr.start()
    results = [out_q.get(timeout=seconds + 300) for _ in procs]
    for pr in procs:
        pr.join(60)
    elapsed = time.time() - t_start

    ws = [r for r in results if r["role"] == "writer"]
    rs = [r for r in results if r["role"] == "reader"]
    finish = [x for r in ws for x in r["finish_lat"]]
    start = [x for r in ws for x in r["start_lat"]]
    uids = [u for r in ws for u in r["written"]]
    read_lat = {}
    for r in rs:
        for k, v in r["lat"].items():
            read_lat.setdefault(k, []).extend(v)
    errors = [e for r in results for e in r["errors"]]
    verify = _verify(url, uids, a.steps)
    result = {
        "backend": backend,
        "seconds": round(elapsed, 1),
        "writers": a.writers,
        "readers": a.readers,
        "steps_per_episode": a.steps,
        "episodes_written": len(uids),
        "episodes_per_s": round(len(uids) / elapsed, 2),
        "write_p50_ms": _pct(finish, 50),
        "write_p99_ms": _pct(finish, 99),
        "write_max_ms": _pct(finish, 100),
        "start_p99_ms": _pct(start, 99),
        "read_p99_ms": {k: _pct(v, 99) for k, v in sorted(read_lat.items())},
        "reader_polls": sum(r["polls"] for r in rs),
        "labels_written": sum(r["labels"] for r in rs),
        "database_locked_errors": sum(r["locked"] for r in results),
        "other_errors": len(errors),
        "error_samples": errors[:5],
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        **verify,
    }
    ok = (result["database_locked_errors"] == 0 and not errors and verify["duplicate_uids"] == 0
          and verify["finished_in_db"] == len(uids) and verify["steps_ok"] and verify["frames_ok"])
    result["ok"] = ok
    print(f"[storage_load] {len(uids)} episodes in {elapsed:.0f} s = {result['episodes_per_s']} episodes/s; "
          f"write p50 {result['write_p50_ms']} ms, p99 {result['write_p99_ms']} ms; "
          f"'database is locked': {result['database_locked_errors']}; other errors: {len(errors)}; "
          f"readers: {result['reader_polls']} page loads", flush=True)
    print(json.dumps(result["read_p99_ms"]), flush=True)
    if tmp is not None:
        tmp.cleanup()
    print_result(result)
    return result


if __name__ == "__main__":
    r = main()
    raise SystemExit(0 if r["ok"] else 1)

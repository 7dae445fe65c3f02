"""The one-command demo: how soon the Training page says "rise beyond noise".

    python -m bench.demo_gain [--minutes 20] [--root DIR] [--env KEY=VALUE ...]

Starts the launcher that ``./scripts/run.sh`` starts (worker + web app, preparation on)
over a fresh data folder and SQLite database, then polls the database every few seconds
for what the presenter sees: the preparation steps ending (demonstrations, Stage 1, the
practice session's first episode) and every evaluated practice checkpoint with its paired
gain over the session's start (the same seeds, 95 % interval), read with the Training page's
own rule (``ui.queries.latest_paired_gain``). Stops at the first "rise beyond noise" or after
``--minutes``. Times are from the launcher's start; the set-up (``scripts/setup.sh``) is
not in them (it is a no-op once the virtual environment exists). ``--env`` passes preparation
sizes (``DOJO_PREP_*``, ui/bootstrap.py) to try other settings.

The last line printed is ``RESULT {json}``: ``minutes_to_rise`` (None if it never rose in
the time given), the timeline and every evaluation.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from bench.common import Launched, print_result


def snapshot(db, task_name: str) -> dict[str, Any]:
    """Jobs of the demo task and its evaluated practice checkpoints, as plain values."""
    from sqlalchemy import func, select

    from storage.models import Checkpoint, Episode, Job, Task
    from ui.queries import latest_paired_gain

    with db.read() as s:
        task = s.scalar(select(Task).where(Task.name == task_name))
        if task is None:
            return {"jobs": {}, "evals": [], "gain": None, "episodes": 0}
        jobs = {j.kind: (j.status, j.progress) for j in s.scalars(select(Job).where(Job.task_id == task.id)
                                                                    .order_by(Job.id))}
        cks = list(s.scalars(select(Checkpoint).where(Checkpoint.task_id == task.id)))
        evals = [{"checkpoint": c.id, "success": c.eval_success, "gain": (c.metrics or {}).get("eval_gain"),
                  "lo": (c.metrics or {}).get("eval_gain_lo"), "hi": (c.metrics or {}).get("eval_gain_hi")}
                 for c in cks if c.eval_success is not None and c.stage != "sft"]
        episodes = s.scalar(select(func.count()).select_from(Episode).where(
            Episode.task_id == task.id, Episode.source == "practice", Episode.status != "running")) or 0
        return {"jobs": jobs, "evals": evals, "gain": latest_paired_gain(cks), "episodes": int(episodes)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0, help="give up after this long (default 20)")
    ap.add_argument("--root", default=None, help="run folder (default data/bench/demo_gain/<stamp>)")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the launcher, e.g. DOJO_PREP_EPOCHS=6")
    ap.add_argument("--every", type=float, default=5.0, help="seconds between polls")
    args = ap.parse_args(argv)
    extra = dict(kv.split("=", 1) for kv in args.env)
    root = Path(args.root or f"data/bench/demo_gain/{time.strftime('%Y%m%d-%H%M%S')}")
    root.mkdir(parents=True, exist_ok=False)
    data, db_path = root / "data", root / "data" / "dojo.sqlite"
    data.mkdir()
    from storage.db import open_db
    from ui.bootstrap import DEMO_TASK

    t0 = time.perf_counter()
    app = Launched(data, db_path, "bench-demo-password", env=extra, prepare=True, timeout_s=180)
    db = open_db(str(db_path))  # the launcher made and migrated it
    events: dict[str, float] = {}
    seen_evals: list[dict[str, Any]] = []
    rise = None
    try:
        while time.perf_counter() - t0 < args.minutes * 60:
            now = (time.perf_counter() - t0) / 60
            snap = snapshot(db, DEMO_TASK)
            for kind, (status, _p) in snap["jobs"].items():
                if status == "done" and f"{kind}_done" not in events:
                    events[f"{kind}_done"] = now
                    print(f"{now:5.1f} min  {kind} done", flush=True)
            if snap["episodes"] and "first_practice_episode" not in events:
                events["first_practice_episode"] = now
                print(f"{now:5.1f} min  first practice episode", flush=True)
            for ev in snap["evals"]:
                if ev["checkpoint"] not in {e["checkpoint"] for e in seen_evals}:
                    seen_evals.append({**ev, "minutes": now})
                    gain = "" if ev["gain"] is None else \
                        f", paired {100 * ev['gain']:+.1f} [{100 * ev['lo']:+.1f}, {100 * ev['hi']:+.1f}] pts"
                    print(f"{now:5.1f} min  checkpoint #{ev['checkpoint']} evaluated {100 * ev['success']:.1f} %"
                          f"{gain}", flush=True)
            g = snap["gain"]
            if g is not None and g["verdict"] == "rise beyond noise":
                rise = {"minutes": now, **{k: g[k] for k in ("gain", "lo", "hi", "p", "seeds", "checkpoint_id")}}
                print(f"{now:5.1f} min  RISE BEYOND NOISE: {100 * g['gain']:+.1f} pts "
                      f"[{100 * g['lo']:+.1f}, {100 * g['hi']:+.1f}] on {g['seeds']} seeds", flush=True)
                break
            if app.proc.poll() is not None:
                raise RuntimeError(f"the launcher exited ({app.proc.returncode}); see {app.log_path}")
            time.sleep(args.every)
    finally:
        code = app.stop()
        db.dispose()
    result = {"minutes_to_rise": None if rise is None else rise["minutes"], "rise": rise, "events_minutes": events,
              "evaluations": seen_evals, "env": extra, "launcher_exit": code, "cores": os.cpu_count(),
              "run_dir": str(root)}
    print_result(result)
    return result


if __name__ == "__main__":
    main()

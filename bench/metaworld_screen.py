"""Screen Meta-World tasks for a self-improvement benchmark: which ones land in the band.

    python -m bench.metaworld_screen --tasks button-press-topdown-v3,drawer-open-v3,... \
        [--demos-per-task 25] [--epochs 8] [--seeds-per-task 20] [--band 0.25,0.6]

The tabletop bench sizes its demonstrations so that BC lands between 25 % and 50 %: below,
practice has nothing to build on; above, little room to show. On Meta-World the demo budget
is per task, and tasks differ far more than demo counts do, so the practical lever is which
tasks to run. This trains one multi-task Stage-1 model on all candidate tasks (demos cached
under ``--root`` with the same names as ``bench.metaworld``, so a later run reuses them) and
reports each task's greedy BC success on seeds disjoint from the test seeds that
``bench.metaworld`` reports on (``SCREEN_SEED0``), so choosing tasks here never looks at
the test set. The last line is ``RESULT {json}`` with ``per_task``, ``in_band`` and a
``tasks`` string for ``bench.metaworld --tasks``.

BC in a multi-task model depends on the mix (button-press-topdown was 40 % among 3 tasks,
100 % among MT10), so screen the mix you mean to run, or read the figures as a guide.
"""
from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

from bench.common import print_result

from core.method.seeds import SCREEN_SEED0


def parse_band(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise SystemExit(f"--band {text!r}: expected LOW,HIGH success rates, e.g. 0.25,0.6") from None
    if not 0.0 <= lo < hi <= 1.0:
        raise SystemExit(f"--band {text!r}: need 0 <= LOW < HIGH <= 1")
    return lo, hi


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", required=True, help="MT10, MT50 or comma-separated task names")
    ap.add_argument("--demos-per-task", type=int, default=25)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seeds-per-task", type=int, default=20, help="greedy rollouts per task")
    ap.add_argument("--band", default="0.25,0.6", help="BC success band LOW,HIGH a task should land in")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--root", default="data/bench/metaworld")
    args = ap.parse_args(argv)
    lo, hi = parse_band(args.band)

    from core.learning.checkpoint import load_checkpoint
    from core.learning.demos import generate_demos
    from core.learning.evaluate import evaluate_policy
    from core.learning.sft import SFTConfig, train_sft
    from sim_backends.metaworld_backend.tasks import resolve_tasks

    t0 = time.perf_counter()
    tasks = resolve_tasks(args.tasks)
    root = Path(args.root)
    dirs = []
    for task in tasks:
        d = root / f"demos-{task}-{args.image_size}px"
        res = generate_demos(d, args.demos_per_task, backend="metaworld",
                             env_config={"task": task, "image_size": args.image_size}, workers=args.workers,
                             progress=False)
        print(f"demos {task}: {res['episodes']} (expert success {res['expert_success_rate']:.2f})", flush=True)
        dirs.append(str(d))
    run = root / "screens" / f"{len(tasks)}tasks-n{args.demos_per_task}-e{args.epochs}-s{args.seed}" \
                             f"-{args.image_size}px-{hashlib.sha1(','.join(tasks).encode()).hexdigest()[:8]}"
    sft = train_sft(SFTConfig(data=",".join(dirs), out=str(run), epochs=args.epochs, eval_every=0,
                              seed=args.seed), progress=False)
    print(f"Stage 1: {sft['train_seconds'] / 60:.1f} min", flush=True)
    model, meta = load_checkpoint(sft["best_policy"])  # no selection evaluations: the last epoch
    rep, recs = evaluate_policy(model, meta["backend"], meta["env_config"], args.seeds_per_task * len(tasks),
                                threshold_s=1.0, n_envs=4, seed0=SCREEN_SEED0)
    if rep.per_task:
        per = {t: v["success"] for t, v in rep.per_task.items()}
    else:  # one task: the backend is that task's own
        per = {tasks[0]: rep.success}
    in_band = [t for t in tasks if lo <= per[t] <= hi]
    for t in tasks:
        print(f"{t:32s} {100 * per[t]:5.1f} %{'  in band' if t in in_band else ''}", flush=True)
    result = {"per_task": per, "band": [lo, hi], "in_band": in_band, "tasks": ",".join(in_band),
              "demos_per_task": args.demos_per_task, "epochs": args.epochs,
              "seeds_per_task": args.seeds_per_task, "seed0": SCREEN_SEED0, "run": str(run),
              "minutes": (time.perf_counter() - t0) / 60}
    print_result(result)
    return result


if __name__ == "__main__":
    main()

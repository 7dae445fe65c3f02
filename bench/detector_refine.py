"""The detector before and after a refinement on labeled rollouts, with the reward model's
image pathway frozen or trained (one run, the same rollouts for every arm).

    python -m bench.detector_refine --run data/bench/metaworld/runs/<tag>/sft [--labels 60] [--check 60]
                                    [--steps 400] [--patience 2]

``--run``: a Stage-1 run directory (``best_policy.pt`` is rolled out, ``best_stg.pt`` is the
reward model). ``--labels`` rollouts of the starting policy (seeds practice uses for its
refinement) are labeled by ground truth; ``--check`` held-out rollouts (practice's check seeds)
are run to the step limit, s is calibrated (F0.5) on their first half and precision/recall
measured on the second, for the unrefined model and for each refined one. Also reports, per
task, the mean d at the first success frame and the mean lowest d of failed episodes (what
fires a false positive). Last line ``RESULT {json}``.
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np

from bench.common import print_result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="Stage-1 run directory (best_policy.pt, best_stg.pt)")
    ap.add_argument("--labels", type=int, default=60, help="labeled rollouts for the refinement")
    ap.add_argument("--check", type=int, default=60, help="held-out rollouts (half calibrate s, half score)")
    ap.add_argument("--steps", type=int, default=400, help="refinement gradient steps")
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--fleet", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    from core.learning.checkpoint import load_checkpoint
    from core.learning.dataset import load_datasets
    from core.learning.evaluate import DEFAULT_TOLERANCE
    from core.learning.fleets import ProcessFleet
    from core.learning.practice.checks import score_check
    from core.method.seeds import CHECK_SEED0, REFINE_SEED0
    from core.learning.refine import RefineConfig, episode_d, from_record, refine_reward
    from core.learning.rollout import DetectorSpec, run_episodes
    from sim_backends.multitask import resolve_task

    t0 = time.perf_counter()
    run = Path(args.run)
    reward, rmeta = load_checkpoint(run / "best_stg.pt")
    policy, _ = load_checkpoint(run / "best_policy.pt")
    backend, env_config = resolve_task(rmeta["backend"], rmeta["env_config"], None, None)
    env_config["terminate_on_success"] = False
    fleet = ProcessFleet(backend, env_config, args.fleet)
    try:
        gen = torch.Generator().manual_seed(args.seed + 29)
        labeled_recs = run_episodes(policy, None, list(range(REFINE_SEED0, REFINE_SEED0 + args.labels)),
                                    fleet=fleet, greedy=False, keep_frames=True, stop_on_ground_truth=True,
                                    generator=gen)
        gen = torch.Generator().manual_seed(args.seed + 17)
        check_recs = run_episodes(policy, None, list(range(CHECK_SEED0, CHECK_SEED0 + args.check)), fleet=fleet,
                                  greedy=False, keep_frames=True, stop_on_ground_truth=False, generator=gen)
    finally:
        fleet.close()
    labeled = [from_record(r) for r in labeled_recs if not r.error]
    check_recs = [r for r in check_recs if not r.error]
    check = [from_record(r) for r in check_recs]
    rollout_minutes = (time.perf_counter() - t0) / 60
    spec = DetectorSpec(float(rmeta.get("threshold_s") or 1.0), args.patience)
    _, demos = load_datasets(rmeta["dataset"]) if rmeta.get("dataset") else (None, [])

    def measure(model) -> dict:
        ds = episode_d(model, check)
        out = score_check([(list(d), r.gt) for d, r in zip(ds, check_recs)], spec, DEFAULT_TOLERANCE, True, 0.5)
        per_task = {}
        for task in sorted({r.task for r in check_recs}):
            goal = [float(d[r.gt.index(True)]) for d, r in zip(ds, check_recs) if r.task == task and r.success]
            fail = [float(d.min()) for d, r in zip(ds, check_recs) if r.task == task and not r.success]
            per_task[task or str(env_config.get("task", "task"))] = {"d_first_success": float(np.mean(goal)) if goal else None,
                                        "d_fail_min": float(np.mean(fail)) if fail else None,
                                        "successes": len(goal), "failures": len(fail)}
        out["per_task"] = per_task
        return out

    result = {"labels": len(labeled), "check_episodes": len(check), "steps": args.steps,
              "rollout_minutes": rollout_minutes, "unrefined": measure(reward)}
    print(f"unrefined: precision {result['unrefined']['precision']:.2f} recall {result['unrefined']['recall']:.2f}",
          flush=True)
    for arm, train_vision in (("refined_frozen_vision", False), ("refined_trained_vision", True)):
        model = copy.deepcopy(reward)
        t1 = time.perf_counter()
        refine_reward(model, labeled, spec.threshold_s,
                      RefineConfig(steps=args.steps, train_vision=train_vision, seed=args.seed), demos=demos)
        result[arm] = {**measure(model), "refine_seconds": time.perf_counter() - t1}
        print(f"{arm}: precision {result[arm]['precision']:.2f} recall {result[arm]['recall']:.2f} "
              f"({result[arm]['refine_seconds']:.0f} s)", flush=True)
    result["minutes"] = (time.perf_counter() - t0) / 60
    print_result(result)
    return result


if __name__ == "__main__":
    main()

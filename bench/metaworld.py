"""Meta-World: BC vs SFT + self-improvement, one multi-task model, per-task figures.

    python -m bench.metaworld [--quick] [--tasks MT10 | reach-v3,push-v3,...] [--demos-per-task N]

The external check of the whole method on an environment Dojo was not built around:

1. Demonstrations from Meta-World's scripted experts (with noise) for every task, one
   dataset per task (``data/bench/metaworld/demos-<task>``, reused across runs).
2. Stage 1: one policy and one steps-to-go model trained on all of them together (a
   multi-task run; the instruction says which task). ``bc`` is that policy's greedy
   success per task on held-out seeds.
3. Stage 2: practice on all tasks at once (a ``multitask`` fleet: each episode's seed
   picks its task), rewarded by the frozen steps-to-go model of the same run. ``si`` is
   the best practice checkpoint's success per task on the same held-out seeds (chosen on
   separate selection seeds).
4. The detector's precision and recall against Meta-World's ``info["success"]`` on
   held-out rollouts of the starting policy (practice's pre-start check).
5. Before practice, the reward model is refined on ``--refine`` rollouts of the starting
   policy labeled by ground truth (``core.learning.refine``; one label per episode, the work of a
   reviewer, reported as ``labels_used``). ``--refine 0`` runs the paper's label-free recipe.
   The check scores the detector before and after the refinement on the same rollouts.
   ``--refine-every N`` refines it again every N practice iterations on those iterations'
   episodes (labeled the same way, all counted in ``labels_used``): a policy that drifts to
   near-misses the first refinement never saw stops being paid for them.

Demonstration budget as in the tabletop bench: a small number per task, sized so that BC
lands in the middle of the range where practice has room to help. The last line printed
is ``RESULT {json}`` with per-task ``bc``, ``si``, ``si_episodes`` and the detector's
``detector_precision`` / ``detector_recall``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench.common import PhaseTimer, add_running_episode_flags, practice_split, print_result, running_episode_settings

DEFAULT_LR = 3e-5  # practice's learning rate here (the tabletop's)
QUICK_TASKS = ("reach-v3", "drawer-close-v3", "button-press-topdown-v3")
# Evaluating 15 seeds per task every 4 iterations (~35 practice episodes on MT10) would cost
# more simulator time than practice itself; every 20 iterations on 10 per task it is ~1/4.
# The full plan is the MT10 recipe measured on 2026-11-25 (30 demos a task, 8 epochs, the goal
# xyz observed: reach's goal is otherwise a ~1 px dot) with the 2,000 practice episodes:
# 30 demos already put six of the ten tasks at 100 % BC, so 50 would leave practice less room.
FULL = dict(tasks="MT10", demos_per_task=30, epochs=8, eval_per_task=50, select_per_task=10,
            practice_episodes=2000, check_episodes=100, si_eval_every=20, si_eval_per_task=10,
            refine_episodes=100, refine_steps=400, refine_every=0, refine_memory=0, goal_observable=True)
QUICK = dict(tasks=",".join(QUICK_TASKS), demos_per_task=25, epochs=8, eval_per_task=30, select_per_task=6,
             practice_episodes=300, check_episodes=30, si_eval_every=4, si_eval_per_task=8,
             refine_episodes=60, refine_steps=400, refine_every=0, refine_memory=0, goal_observable=False)


def _goal_markers(spec: str, tasks) -> dict[str, float]:
    """``--goal-marker`` "reach-v3=0.05,push-v3=0.04" -> {task: radius}, tasks of this run only."""
    out: dict[str, float] = {}
    for part in filter(None, (x.strip() for x in spec.split(","))):
        task, sep, radius = part.partition("=")
        if not sep or task not in tasks:
            raise SystemExit(f"--goal-marker {part!r}: expected TASK=RADIUS with TASK one of this run's tasks "
                             f"({', '.join(tasks)})")
        try:
            out[task] = float(radius)
        except ValueError:
            raise SystemExit(f"--goal-marker {part!r}: the radius is metres, e.g. reach-v3=0.05") from None
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"3 tasks ({', '.join(QUICK_TASKS)}), ≤ 15 min")
    ap.add_argument("--tasks", help="MT10, MT50 or comma-separated task names (default: MT10; quick: 3 tasks)")
    ap.add_argument("--demos-per-task", type=int)
    ap.add_argument("--image-encoder", default="scratch",
                    help="Stage 1's image encoder: scratch (default) or a frozen pretrained backbone "
                         "(efficientnet_lite0/1/2, mobilenet_v2; bench.pretraining compares them)")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--eval-per-task", type=int)
    ap.add_argument("--practice-episodes", type=int)
    ap.add_argument("--si-eval-every", type=int, help="practice iterations between evaluations on selection seeds")
    ap.add_argument("--si-eval-per-task", type=int, help="selection seeds per task in each of those evaluations")
    ap.add_argument("--check-episodes", type=int, help="starting-policy rollouts for the detector check")
    ap.add_argument("--refine", dest="refine_episodes", type=int,
                    help="labeled rollouts that refine the reward model before practice (default: quick 60, "
                         "full 200; 0 = the paper's label-free recipe)")
    ap.add_argument("--refine-every", dest="refine_every", type=int,
                    help="re-refine the reward model every N practice iterations on their labeled episodes "
                         "(default 0 = off; measured on button-press it did not prevent the collapse, README)")
    ap.add_argument("--refine-memory", dest="refine_memory", type=int,
                    help="with --refine-every: each refinement also trains on up to N earlier labeled episodes")
    ap.add_argument("--refine-keep-s", action="store_true",
                    help="with --refine-every: keep the check's s instead of re-calibrating it at each refinement")
    ap.add_argument("--goal-marker", default="",
                    help="TASK=R[,TASK=R]: draw that task's goal marker as a ball of radius R metres "
                         "(MetaWorldConfig.goal_marker_radius; reach-v3=0.05 draws its success radius, "
                         "where the scene's 2 cm ball is ~1 px at 64 px)")
    ap.add_argument("--ground-truth-reward", action="store_true",
                    help="oracle ablation, not the method: practice rewarded and ended by Meta-World's "
                         "info['success'] instead of the steps-to-go model (the ceiling a perfect reward "
                         "model would give on this plan; the run directory ends in -oracle)")
    ap.add_argument("--bc-weight", type=float, default=0.0,
                    help="demonstration anchor in practice's update (PracticeConfig.bc_weight; not in the paper; "
                         "the run directory ends in -bc<weight>)")
    ap.add_argument("--calibration-beta", type=float, default=None,
                    help="practice's F-beta for calibrating s on the check rollouts (default 0.5: precision "
                         "weighs twice recall; 1 = F1, a more sensitive detector)")
    add_running_episode_flags(ap)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--goal-observable", action=argparse.BooleanOptionalAction, default=None,
                    help="the goal xyz in the proprioception (Meta-World's goal-observable setting; default: on "
                         "in the full plan, off in --quick)")
    ap.add_argument("--mesh-cell", type=float, default=0.01,
                    help="render the scene's meshes coarsened to this grid (metres; MetaWorldConfig.mesh_cell): "
                         "0.01, the default, halves a rendered step's cost on a CPU renderer for frames within "
                         "1 grey level of the full meshes; 0 = the full meshes (runs before 2026-12-05)")
    ap.add_argument("--fleet", type=int, default=4, help="robots (simulator processes) in practice")
    ap.add_argument("--rollout-threads", type=int, default=1,
                    help="the learner's torch threads during rollouts (PracticeConfig.rollout_threads; 0 = "
                         "torch's default). 1: 196 practice steps/s against 158 with 2 on 2 cores")
    ap.add_argument("--lr", type=float, default=DEFAULT_LR,
                    help="practice learning rate (another value gets its own run directory, -lr<value>)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--root", default="data/bench/metaworld")
    return ap


def resolve_plan(args) -> dict[str, Any]:
    """The plan (QUICK or FULL with the arguments' overrides); sets ``args.goal_observable``."""
    plan = dict(QUICK if args.quick else FULL)
    for k in ("tasks", "demos_per_task", "epochs", "eval_per_task", "practice_episodes", "refine_episodes",
              "refine_every", "refine_memory", "si_eval_every", "si_eval_per_task", "check_episodes"):
        if getattr(args, k) is not None:
            plan[k] = getattr(args, k)
    args.goal_observable = plan["goal_observable"] = (plan["goal_observable"] if args.goal_observable is None
                                                      else args.goal_observable)
    return plan


def task_demos(tasks, markers: dict[str, float], mesh_cell: float | None, plan: dict[str, Any], args, root: Path,
               timer: PhaseTimer) -> list[str]:
    """One demonstration dataset per task (reused across runs): their directories."""
    from core.learning.demos import generate_demos

    dirs = []
    for task in tasks:
        d = root / (f"demos-{task}-{args.image_size}px{'-goal' if args.goal_observable else ''}"
                    + (f"-marker{markers[task]:g}" if task in markers else "")
                    + (f"-mesh{mesh_cell:g}" if mesh_cell else ""))
        env_config = {"task": task, "image_size": args.image_size, "mesh_cell": mesh_cell}
        if args.goal_observable:
            env_config["goal_observable"] = True
        if task in markers:
            env_config["goal_marker_radius"] = markers[task]
        with timer("demos"):
            res = generate_demos(d, plan["demos_per_task"], backend="metaworld", env_config=env_config,
                                 workers=args.workers, progress=False)
        print(f"demos {task}: {res['episodes']} (expert success {res['expert_success_rate']:.2f})", flush=True)
        dirs.append(str(d))
    return dirs


def run_tag(tasks, markers: dict[str, float], mesh_cell: float | None, plan: dict[str, Any], args) -> str:
    """The Stage-1 run's directory name under ``<root>/runs``."""
    nt = len(tasks)
    tag = f"{'-'.join(t.replace('-v3', '') for t in tasks) if nt <= 3 else f'{nt}tasks'}" \
          f"-n{plan['demos_per_task']}-e{plan['epochs']}-s{args.seed}"
    if len(tag) > 120:
        tag = f"{nt}tasks-n{plan['demos_per_task']}-e{plan['epochs']}-s{args.seed}"
    if args.image_size != 64:
        tag += f"-{args.image_size}px"
    if args.image_encoder != "scratch":
        tag += f"-{args.image_encoder}"
    if args.goal_observable:
        tag += "-goal"
    if markers:
        tag += "-marker" + "-".join(f"{t.replace('-v3', '')}{r:g}" for t, r in sorted(markers.items()))
    if mesh_cell:
        tag += f"-mesh{mesh_cell:g}"
    return tag


def si_dir_name(plan: dict[str, Any], args) -> str:
    """This practice variant's directory name inside the run."""
    return ((f"si-refine{plan['refine_episodes']}" if plan["refine_episodes"] else "si")
            + (f"-every{plan['refine_every']}" if plan["refine_every"] else "")
            + (f"-mem{plan['refine_memory']}" if plan["refine_every"] and plan["refine_memory"] else "")
            + ("-keeps" if plan["refine_every"] and args.refine_keep_s else "")
            + ("-oracle" if args.ground_truth_reward else "")
            + (f"-lr{args.lr:g}" if args.lr != DEFAULT_LR else "")
            + (f"-bc{args.bc_weight:g}" if args.bc_weight else "")
            + (f"-beta{args.calibration_beta:g}" if args.calibration_beta is not None else "")
            + args.running_tag)


def practice(sft: dict[str, Any], si_dir: Path, plan: dict[str, Any], args, nt: int) -> dict[str, Any]:
    """Practice on every task at once from the Stage-1 checkpoints."""
    from core.learning.practice import PracticeConfig, run_practice

    return run_practice(PracticeConfig(
        policy_checkpoint=sft["best_policy"], reward_checkpoint=sft["best_stg"], out=str(si_dir),
        max_episodes=plan["practice_episodes"], eval_every=plan["si_eval_every"],
        eval_episodes=plan["si_eval_per_task"] * nt, check_episodes=plan["check_episodes"],
        min_precision=0.0, min_recall=0.0, plateau_evals=1000, fleet_size=args.fleet, lr=args.lr,
        refine_episodes=plan["refine_episodes"], refine_steps=plan["refine_steps"], refine_every=plan["refine_every"],
        refine_memory=plan["refine_memory"], refine_recalibrate=not args.refine_keep_s,
        rollout_threads=args.rollout_threads or None,
        ground_truth_reward=args.ground_truth_reward, bc_weight=args.bc_weight, seed=args.seed,
        **args.running,
        **({} if args.calibration_beta is None else {"calibration_beta": args.calibration_beta})), progress=True)


def build_result(tasks, bc, after, outcomes: dict[str, list[int]], sft: dict[str, Any], si: dict[str, Any],
                 si_dir: Path, plan: dict[str, Any], args, markers: dict[str, float], mesh_cell: float | None,
                 demo_minutes: float, t0: float, timer: PhaseTimer) -> dict[str, Any]:
    """The RESULT: per-task BC and SI, the paired gain, the detector, where the time went."""
    from core.method.stats import paired_gain

    chk = json.loads((Path(si["run_dir"]) / "detector_check.json").read_text())
    rows = {t: {"bc": bc[t]["success"], "bc_ci": bc[t]["success_ci"], "si": after[t]["success"],
                "si_ci": after[t]["success_ci"], "episodes": after[t]["episodes"]} for t in bc}
    mean = lambda k: sum(r[k] for r in rows.values()) / max(1, len(rows))  # noqa: E731
    # Both evaluations run the same test seeds (the same number per task): the gain is paired.
    g = paired_gain(outcomes[sft["best_policy"]], outcomes[si["best"]])
    return {
        "tasks": list(tasks), "per_task": rows, "bc_mean": mean("bc"), "si_mean": mean("si"),
        "si_gain_points": 100 * (mean("si") - mean("bc")), "si_episodes": si["episodes"],
        "si_gain_ci_points": [100 * g["ci"][0], 100 * g["ci"][1]], "si_gain_p": g["p"],
        "si_best_iteration": si["best_iteration"], "demos_per_task": plan["demos_per_task"],
        "detector_precision": chk["precision"], "detector_recall": chk["recall"],
        "detector_threshold_s": chk["threshold_s"], "detector_counts": chk["counts"],
        "labels_used": plan["refine_episodes"] + si.get("labels_used", 0),
        "refine_every": plan["refine_every"], "refine_memory": plan["refine_memory"],
        "refine_keep_s": args.refine_keep_s,
        "detector_unrefined": {k: chk["before"][k] for k in ("precision", "recall", "threshold_s", "counts")}
        if "before" in chk else None,
        "stg_mae_steps": sft["calibration"].get("stg_mae_steps"), "train_minutes": sft["train_seconds"] / 60,
        "demo_minutes": demo_minutes, "minutes": (time.perf_counter() - t0) / 60, "quick": args.quick,
        "goal_observable": args.goal_observable, "goal_markers": markers, "mesh_cell": mesh_cell,
        "fleet": args.fleet, "rollout_threads": args.rollout_threads,
        "phase_minutes": timer.minutes(),
        "practice_split_minutes": {k: round(v, 2) for k, v in practice_split(si["run_dir"]).items()},
        "reward": "ground_truth (oracle ablation)" if args.ground_truth_reward else "steps_to_go",
        **args.running,
        "lr": args.lr, "bc_weight": args.bc_weight, "calibration_beta": args.calibration_beta, "run_dir": str(si_dir),
    }


def main(argv=None) -> dict:
    ap = build_parser()
    args = ap.parse_args(argv)
    args.running, args.running_tag = running_episode_settings(ap, args)
    plan = resolve_plan(args)

    # Everything the run uses is imported before any work, as before the helpers were split out.
    from core.learning.checkpoint import load_checkpoint
    from core.learning.demos import generate_demos  # noqa: F401
    from core.learning.evaluate import evaluate_policy
    from core.learning.practice import PracticeConfig, run_practice  # noqa: F401
    from core.learning.policy import PolicyConfig
    from core.learning.sft import SFTConfig, train_sft
    from core.method.stats import paired_gain  # noqa: F401
    from sim_backends.metaworld_backend.tasks import resolve_tasks

    t0 = time.perf_counter()
    timer = PhaseTimer()
    tasks = resolve_tasks(plan["tasks"])
    markers = _goal_markers(args.goal_marker, tasks)
    nt = len(tasks)
    root = Path(args.root)
    t_demo = time.perf_counter()
    mesh_cell = args.mesh_cell or None
    dirs = task_demos(tasks, markers, mesh_cell, plan, args, root, timer)
    demo_minutes = (time.perf_counter() - t_demo) / 60
    run = root / "runs" / run_tag(tasks, markers, mesh_cell, plan, args)
    si_dir = run / si_dir_name(plan, args)
    with timer("stage1"):
        sft = train_sft(SFTConfig(data=",".join(dirs), out=str(run / "sft"), epochs=plan["epochs"],
                                  eval_every=max(1, plan["epochs"] // 2), eval_episodes=plan["select_per_task"] * nt,
                                  seed=args.seed, policy=PolicyConfig(image_encoder=args.image_encoder)),
                        progress=False)
    print(f"Stage 1: {sft['train_seconds'] / 60:.1f} min, last {json.dumps(sft['last'])[:300]}", flush=True)
    _, meta = load_checkpoint(sft["best_stg"])
    backend, env_config = meta["backend"], meta["env_config"]

    outcomes: dict[str, list[int]] = {}  # checkpoint -> success per test seed, in seed order

    def per_task(ckpt: str) -> dict[str, dict[str, Any]]:
        model, _ = load_checkpoint(ckpt)
        with timer("test_evaluation"):
            rep, recs = evaluate_policy(model, backend, env_config, plan["eval_per_task"] * nt, threshold_s=1.0,
                                        n_envs=4)
        outcomes[ckpt] = [int(bool(r.success)) for r in recs]
        if not rep.per_task:  # a single task: the backend is that task's own
            return {tasks[0]: {"episodes": rep.episodes, "success": rep.success, "success_ci": rep.success_ci}}
        return rep.per_task

    bc = per_task(sft["best_policy"])
    print("BC per task: " + ", ".join(f"{t} {v['success']:.2f}" for t, v in bc.items()), flush=True)
    with timer("practice"):
        si = practice(sft, si_dir, plan, args, nt)
    after = per_task(si["best"])
    result = build_result(tasks, bc, after, outcomes, sft, si, si_dir, plan, args, markers, mesh_cell,
                          demo_minutes, t0, timer)
    for where in (run, si_dir):  # the run's latest, and this practice variant's own
        (where / "result.json").write_text(json.dumps(result, indent=2, default=float))
    print_result(result)
    return result


if __name__ == "__main__":
    main()

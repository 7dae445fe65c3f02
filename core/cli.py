"""Dojo command line: ``python -m core.cli <command> --help``.

  demos     generate scripted-expert demonstrations into a dataset directory
  sft       Stage 1: train the BC + steps-to-go policy on a dataset
  eval      roll out a checkpoint: success with a 95% interval, the detector
            against ground truth, steps-to-go error on held-out demonstrations
  practice  Stage 2: self-improvement on a fleet, rewarded by a frozen Stage-1 model
  pipeline  demos -> sft -> eval on the bundled demo task, end to end
  refine-labels  re-train a reward model's steps-to-go head on the episodes people judged
            in one practice session (Review labels, Live overrides), from the database
  worker    the background worker: runs queued jobs, live telemetry, remote robots
            (same as ``python -m core.worker``; see its --help)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_DATA_DIR = Path(os.environ.get("DOJO_DATA", "data"))


def _json_object(text: str | None, flag: str) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{flag} must be a JSON object, e.g. '{{\"task\": \"push-v3\"}}' ({e})") from e
    if not isinstance(cfg, dict):
        raise ValueError(f"{flag} must be a JSON object, got {type(cfg).__name__}")
    return cfg


def _env_config(args) -> dict[str, Any]:
    """Backend config from --env-config JSON plus the per-backend shortcuts
    (--family for tabletop, --task for metaworld, --image-size for all)."""
    cfg: dict[str, Any] = _json_object(getattr(args, "env_config", None), "--env-config") or {}
    backend = getattr(args, "backend", "tabletop")
    if backend == "tabletop":
        cfg.setdefault("family", args.family)
    if getattr(args, "task", None):
        cfg["task"] = args.task
    if getattr(args, "image_size", None):
        cfg["image_size"] = args.image_size
    return cfg


def _policy_config(args, **extra):
    from core.learning.policy import PolicyConfig

    fields = {f.name for f in dataclasses.fields(PolicyConfig)}
    kw = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    kw.update(extra)
    return PolicyConfig(**kw)


def cmd_demos(args) -> dict[str, Any]:
    from core.learning.demos import generate_demos

    return generate_demos(args.out, args.n, backend=args.backend, env_config=_env_config(args),
                          seed0=args.seed0, workers=args.workers, progress=not args.quiet)


def cmd_sft(args) -> dict[str, Any]:
    from core.learning.sft import SFTConfig, train_sft

    cfg = SFTConfig(data=args.data, out=args.out, max_episodes=args.max_episodes,
                    val_fraction=args.val_fraction, epochs=args.epochs, batch_size=args.batch_size,
                    lr=args.lr, seed=args.seed, eval_every=args.eval_every,
                    eval_episodes=args.eval_episodes, threads=args.threads, device=args.device,
                    max_minutes=args.max_minutes, stg_select=args.stg_select, policy=_policy_config(args))
    return train_sft(cfg, progress=not args.quiet, resume=not args.fresh)


def evaluate_checkpoint(checkpoint: str, episodes: int, *, reward_checkpoint: str | None = None,
                        data: str | None = None, threshold: float | None = None, patience: int = 1,
                        tolerance: int | None = None,
                        seed0: int | None = None, n_envs: int = 16, device: str = "auto",
                        progress: bool = True, backend: str | None = None,
                        env_config: dict[str, Any] | None = None,
                        outcomes: list[int] | None = None) -> dict[str, Any]:
    """The eval command's work, as a function the bench and tests call too.

    ``backend`` / ``env_config`` evaluate on another task than the checkpoint was trained
    on (e.g. a new object); by default, the checkpoint's own. A list passed as ``outcomes``
    receives the ground-truth success of every seed, in seed order (for paired comparisons)."""
    from tqdm import tqdm

    from core.learning.checkpoint import load_checkpoint
    from core.learning.dataset import held_out_episodes
    from core.learning.evaluate import DEFAULT_TOLERANCE, EVAL_SEED0, calibrate_on_demos, evaluate_policy
    from core.learning.sft import resolve_device

    tolerance = DEFAULT_TOLERANCE if tolerance is None else tolerance
    dev = resolve_device(device)
    policy, meta = load_checkpoint(checkpoint, dev)
    reward_path = reward_checkpoint or checkpoint
    reward, rmeta = (policy, meta) if reward_path == checkpoint else load_checkpoint(reward_path, dev)
    out: dict[str, Any] = {"checkpoint": checkpoint, "reward_checkpoint": reward_path}
    held = held_out_episodes(rmeta, data)
    if held:
        calib = calibrate_on_demos(reward, held, patience=patience, tolerance=tolerance)
        out["calibration"] = calib
        out["stg_mae_steps"] = calib["stg_mae_steps"]
    if threshold is None:
        threshold = out.get("calibration", {}).get("threshold_s", rmeta.get("threshold_s"))
    if threshold is None:
        raise SystemExit(f"no detector threshold: {reward_path} holds none and no held-out demos were "
                         "found; pass --threshold S or --data DATASET")
    bar = tqdm(total=episodes, desc="eval", disable=not progress)
    from sim_backends.multitask import resolve_task

    backend, env_config = resolve_task(meta["backend"], meta["env_config"], backend, env_config)
    out.update({"backend": backend, "env_config": env_config})
    report, records = evaluate_policy(policy, backend, env_config, episodes, threshold,
                                patience=patience, tolerance=tolerance,
                                seed0=EVAL_SEED0 if seed0 is None else seed0,
                                n_envs=n_envs, reward_model=None if reward is policy else reward,
                                progress=lambda rec: bar.update(1))
    bar.close()
    out.update(report.to_dict())
    if outcomes is not None:
        outcomes[:] = [int(bool(r.success)) for r in records]
    return out


def cmd_eval(args) -> dict[str, Any]:
    def run(checkpoint: str, outcomes: list[int]) -> dict[str, Any]:
        return evaluate_checkpoint(checkpoint, args.episodes, reward_checkpoint=args.reward_checkpoint,
                                   data=args.data, threshold=args.threshold, patience=args.patience,
                                   tolerance=args.tolerance,
                                   seed0=args.seed0, n_envs=args.n_envs, device=args.device,
                                   progress=not args.quiet, backend=args.backend,
                                   env_config=_json_object(args.env_config, "--env-config"), outcomes=outcomes)

    after: list[int] = []
    out = run(args.checkpoint, after)
    if args.baseline:
        from core.method.stats import paired_gain

        before: list[int] = []
        base = run(args.baseline, before)
        g = paired_gain(before, after)
        # The detector of both runs is the same reward model (--reward-checkpoint / beside
        # --checkpoint), so only the policies differ.
        out["baseline"] = {"checkpoint": args.baseline, "success": base["success"],
                           "success_ci": base["success_ci"], "episodes": base["episodes"]}
        out["paired_gain"] = {"gain": g["gain"], "ci": g["ci"], "p": g["p"], "gained": g["gained"],
                              "lost": g["lost"], "seeds": g["n"]}
    return out


def cmd_practice(args) -> dict[str, Any]:
    from core.learning.practice import PracticeConfig, run_practice

    fields = {f.name for f in dataclasses.fields(PracticeConfig)}
    kw = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if "env_config" in kw:
        kw["env_config"] = _json_object(kw["env_config"], "--env-config")
    return run_practice(PracticeConfig(**kw), progress=not args.quiet)


def cmd_pipeline(args) -> dict[str, Any]:
    """The bundled demo task end to end: demonstrations, Stage 1, evaluation."""
    root = Path(args.root)
    data, run = root / "demos" / "block2block", root / "runs" / "sft-block2block"
    t0 = time.perf_counter()
    print(f"[1/3] demonstrations -> {data}", flush=True)
    demos = cmd_demos(argparse.Namespace(out=str(data), n=args.demos, backend="tabletop",
                                         family="block2block", image_size=None, seed0=0,
                                         workers=args.workers, quiet=False))
    print(f"[2/3] Stage-1 training -> {run}", flush=True)
    from core.learning.sft import SFTConfig, train_sft

    sft = train_sft(SFTConfig(data=str(data), out=str(run), epochs=args.epochs,
                              eval_episodes=args.select_episodes), progress=True)
    print("[3/3] evaluation", flush=True)
    ev = evaluate_checkpoint(sft["best_policy"], args.eval_episodes, reward_checkpoint=sft["best_stg"])
    return {"demos": demos, "sft": {k: sft[k] for k in ("best_policy", "best_stg", "train_seconds")},
            "eval": ev, "minutes": (time.perf_counter() - t0) / 60}


def _add_policy_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (PolicyConfig; defaults in core/learning/policy.py)")
    g.add_argument("--image-encoder", dest="image_encoder",
                   help="scratch | efficientnet_lite0 | hf:<local dir>")
    g.add_argument("--text-encoder", dest="text_encoder", help="minilm | scratch | hf:<local dir>")
    g.add_argument("--trunk", help="bert | hf:<local dir>")
    g.add_argument("--no-proprio", dest="use_proprio", action="store_const", const=False)
    g.add_argument("--unfreeze-image-encoder", dest="freeze_image_encoder", action="store_const", const=False)
    g.add_argument("--d-model", dest="d_model", type=int)
    g.add_argument("--n-layers", dest="n_layers", type=int)
    g.add_argument("--action-bins", dest="action_bins", type=int)
    g.add_argument("--stg-cap", dest="stg_cap", type=int)
    g.add_argument("--stg-bin-width", dest="stg_bin_width", type=int)
    g.add_argument("--stg-label-sigma", dest="stg_label_sigma", type=float,
                   help="0 = plain cross-entropy (paper); >0 = HL-Gauss label spread in steps")
    g.add_argument("--no-film", dest="film", action="store_const", const=False)
    g.add_argument("--no-grounding", dest="grounding", action="store_const", const=False)
    g.add_argument("--keypoint-query", dest="keypoint_query", choices=("sentence", "tokens"),
                   help="goal keypoints read the sentence mean (default) or pool the tokens per keypoint")


def cmd_refine_labels(args: argparse.Namespace) -> dict:
    from core.worker.refine_from_labels import refine_from_labels, session_detector
    from storage import init_db, repo

    db = init_db(args.db)
    with db.read() as s:
        sess = repo.get_session(s, args.session)
        task = repo.get_task(s, sess.task_id)
        reward = args.reward or (sess.params or {}).get("reward_checkpoint")
        s_ran, p_ran = session_detector(s, sess.id)
    if not reward:
        raise ValueError(f"session {args.session} does not record its reward model: pass --reward best_stg.pt")
    res = refine_from_labels(db.read, task_id=sess.task_id, session_id=sess.id, reward_checkpoint=reward,
                             out=args.out, steps=args.steps, lr=args.lr, min_labels=args.min_labels,
                             threshold_s=s_ran, patience=int(p_ran or task.detector_patience or 1),
                             fail_tail=args.fail_tail or None, anchor=args.anchor)
    res.pop("refine", None)
    return res


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m core.cli", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demos", help="generate scripted-expert demonstrations (resumable)")
    p.add_argument("--out", required=True, help="dataset directory (created; re-run to resume)")
    p.add_argument("--n", type=int, required=True, help="successful episodes wanted")
    p.add_argument("--backend", default="tabletop")
    p.add_argument("--family", default="block2block", choices=["block2block", "block2location"],
                   help="tabletop instruction family")
    p.add_argument("--task", help="metaworld task name, e.g. push-v3")
    p.add_argument("--env-config", dest="env_config", help="backend config as a JSON object")
    p.add_argument("--image-size", dest="image_size", type=int)
    p.add_argument("--seed0", type=int, default=0, help="first environment seed")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demos)

    p = sub.add_parser("sft", help="Stage 1: train BC + steps-to-go on a dataset")
    p.add_argument("--data", required=True, help="dataset directory; several, comma-separated, train one "
                   "multi-task model (evaluation then cycles through their tasks)")
    p.add_argument("--out", required=True, help="run directory (resumes from last.pt if present)")
    p.add_argument("--max-episodes", type=int, help="use only the first N episodes (by seed)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--max-minutes", type=float)
    p.add_argument("--fresh", action="store_true", help="ignore an existing last.pt")
    p.add_argument("--stg-select", dest="stg_select", choices=["mae", "loss"], default="mae",
                   help="pick best_stg.pt by validation error of d(o, g) (mae, default) or by the "
                        "steps-to-go cross-entropy (loss)")
    p.add_argument("--quiet", action="store_true")
    _add_policy_args(p)
    p.set_defaults(func=cmd_sft)

    p = sub.add_parser("eval", help="evaluate a checkpoint")
    p.add_argument("--checkpoint", required=True, help="policy checkpoint (e.g. best_policy.pt)")
    p.add_argument("--reward-checkpoint", help="steps-to-go model for the detector (default: best_stg.pt "
                   "beside --checkpoint if present, else the policy itself)")
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--data", help="dataset for held-out calibration (default: the one it was trained on)")
    p.add_argument("--threshold", type=float, help="detector threshold s (default: calibrated)")
    p.add_argument("--patience", type=int, default=1,
                   help="consecutive frames with d <= s before the detector fires")
    p.add_argument("--tolerance", type=int, help="steps before the goal at which a firing still "
                   "counts as correct (default 3)")
    p.add_argument("--seed0", type=int)
    p.add_argument("--backend", help="evaluate on another backend than the checkpoint's (default: its own)")
    p.add_argument("--env-config", dest="env_config",
                   help="evaluate on another task, as a JSON backend config, e.g. "
                        "'{\"family\": \"block2location\", \"blocks\": [], \"objects\": [\"banana\"]}'")
    p.add_argument("--n-envs", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--baseline", help="another policy checkpoint to run on the same seeds; adds its success and "
                   "the paired gain of --checkpoint over it (95 %% interval, exact McNemar p)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("practice", help="Stage 2: self-improvement (REINFORCE, frozen steps-to-go reward)")
    p.add_argument("--policy", dest="policy_checkpoint", required=True,
                   help="starting policy (Stage-1 best_policy.pt or a practice checkpoint)")
    p.add_argument("--reward", dest="reward_checkpoint", required=True,
                   help="frozen reward model / success detector (Stage-1 best_stg.pt)")
    p.add_argument("--out", required=True,
                   help="run directory (resumes from its last completed iteration; the settings it started "
                        "with, kept in its run.json, must stay the same except the budget, evaluation, "
                        "stopping bars and fleet)")
    p.add_argument("--fleet-size", dest="fleet_size", type=int, help="robots (default: cores)")
    p.add_argument("--backend", help="practise on another backend than the reward model's")
    p.add_argument("--env-config", dest="env_config",
                   help="practise on another task (JSON backend config), e.g. a new object: "
                        "'{\"family\": \"block2location\", \"blocks\": [], \"objects\": [\"banana\"]}'")
    p.add_argument("--in-process", dest="processes", action="store_const", const=False,
                   help="simulators in this process instead of one process per robot")
    p.add_argument("--finish-running", dest="finish_running_episodes", action="store_const", const=True,
                   help="when an iteration's buffer is full, let the episodes under way run to their end and join "
                        "it (before 2026-12-04; default: drop them, the iteration ends as the buffer fills)")
    p.add_argument("--plan-starts", dest="plan_starts", action="store_const", const=True,
                   help="start an episode only while the buffer plus the running episodes' expected tuples fall "
                        "short of an iteration's; other robots wait (with --finish-running: no surplus episodes "
                        "and no lean towards short ones; with dropping: fewer dropped)")
    p.add_argument("--rollout-groups", dest="rollout_groups", type=int,
                   help="robot groups in the rollout loop: one group's simulators step while the next group's "
                        "inference runs (1 = lock-step; default: 2 for a process fleet of >= 4 robots)")
    p.add_argument("--rollout-threads", dest="rollout_threads", type=int,
                   help="the learner's torch threads while robots roll out (updates keep torch's own); 1 leaves "
                        "the simulators a core on a 2-core machine (Meta-World: 196 against 158 steps/s)")
    p.add_argument("--gamma", type=float, help="discount (default 0.9)")
    p.add_argument("--c", type=float, help="REINFORCE loss scale (default 0.05)")
    p.add_argument("--lr", type=float, help="learning rate (default 3e-5)")
    p.add_argument("--weight-decay", dest="weight_decay", type=float)
    p.add_argument("--tuples", dest="tuples_per_iteration", type=int, help="per iteration (default 1024)")
    p.add_argument("--minibatch", type=int, help="default 64")
    p.add_argument("--train-vision", dest="freeze_vision", action="store_const", const=False,
                   help="also update the image encoder (frozen by default)")
    p.add_argument("--trainable", choices=["policy", "action_head"],
                   help="what the update trains (default policy: all but the frozen vision)")
    p.add_argument("--baseline", choices=["none", "mean"],
                   help="subtract the iteration's mean return (default none, as METHOD.md)")
    p.add_argument("--bc-weight", dest="bc_weight", type=float,
                   help="demonstration anchor (not in the paper): add this x the BC loss on the policy's own "
                        "Stage-1 training demonstrations to every REINFORCE step (default 0 = off)")
    p.add_argument("--update-dropout", dest="update_dropout", action="store_const", const=True,
                   help="keep dropout on in the REINFORCE update (off by default: rollouts sample without it)")
    p.add_argument("--threshold", dest="threshold_s", type=float, help="detector s (default: calibrated)")
    p.add_argument("--patience", type=int, help="frames with d <= s before the detector fires (default 2)")
    p.add_argument("--no-compile", dest="compile", action="store_const", const=False,
                   help="eager rollout forward passes (default: torch.compile'd, padded to the fleet size; "
                        "or set DOJO_NO_COMPILE=1)")
    p.add_argument("--calibration-beta", dest="calibration_beta", type=float,
                   help="without --threshold, s maximises F-beta on half of the check rollouts "
                        "(default 0.5: precision weighs twice recall; 1 = F1)")
    p.add_argument("--ground-truth-reward", dest="ground_truth_reward", action="store_const", const=True,
                   help="oracle ablation: simulator success ends episodes and gives the reward")
    p.add_argument("--check-episodes", dest="check_episodes", type=int,
                   help="held-out rollouts for the detector check (0 = skip; default 100)")
    p.add_argument("--min-precision", dest="min_precision", type=float, help="default 0.5")
    p.add_argument("--min-recall", dest="min_recall", type=float, help="default 0.5")
    p.add_argument("--refine-episodes", dest="refine_episodes", type=int,
                   help="before the check, refine the reward model on N rollouts of the starting policy labeled "
                        "by the simulator's ground truth (N labels; default 0 = the paper's label-free recipe)")
    p.add_argument("--refine-steps", dest="refine_steps", type=int, help="gradient steps of the refinement (default 400)")
    p.add_argument("--refine-every", dest="refine_every", type=int,
                   help="refine the reward model again every N iterations on those iterations' practice episodes, "
                        "labeled by the simulator's ground truth (real robots: supervisors' verdicts); "
                        "keeps a policy from gaming the detector (default 0 = off)")
    p.add_argument("--refine-memory", dest="refine_memory", type=int,
                   help="with --refine-every: also train each refinement on up to N earlier labeled episodes "
                        "(the first refinement's rollouts first), so it does not forget (default 0)")
    p.add_argument("--refine-keep-s", dest="refine_recalibrate", action="store_const", const=False,
                   help="with --refine-every: keep s where the pre-practice check put it instead of "
                        "re-calibrating it on held-out practice episodes at each refinement")
    p.add_argument("--detector-tolerance", dest="detector_tolerance", type=int,
                   help="steps a detector may fire before ground truth and still count as right in the check and "
                        "its calibration (default 3; 0 = strict: a fire ends the episode, so an early one is a miss)")
    p.add_argument("--refine-frozen-vision", dest="refine_train_vision", action="store_const", const=False,
                   help="keep the reward model's image pathway frozen while refining (default: trained)")
    p.add_argument("--eval-every", dest="eval_every", type=int, help="iterations (default 5)")
    p.add_argument("--eval-episodes", dest="eval_episodes", type=int, help="default 200")
    p.add_argument("--max-episodes", dest="max_episodes", type=int, help="practice budget (default 3000)")
    p.add_argument("--plateau-evals", dest="plateau_evals", type=int, help="default 4")
    p.add_argument("--stop-after-drops", dest="stop_after_drops", type=int,
                   help="stop when this many evaluations in a row are below the start's beyond noise (paired on "
                        "the same seeds): the policy is gaming the detector (default 2; 0 = never)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default: CUDA when available), cpu or cuda")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_practice)

    p = sub.add_parser("pipeline", help="demos -> sft -> eval on the bundled Block2Block task")
    p.add_argument("--root", default=str(DEFAULT_DATA_DIR))
    p.add_argument("--demos", type=int, default=400)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--select-episodes", type=int, default=50)
    p.add_argument("--eval-episodes", type=int, default=200)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.set_defaults(func=cmd_pipeline)

    p = sub.add_parser("refine-labels", help="re-train a reward model's steps-to-go head on a session's "
                                             "judged episodes in the database (the web app's refine job)")
    p.add_argument("--db", default=None, help="database URL or SQLite path (default: DOJO_DB, data/dojo.sqlite)")
    p.add_argument("--session", type=int, required=True, help="practice session whose labels/overrides to use")
    p.add_argument("--reward", default=None, help="reward checkpoint (default: the one the session ran with)")
    p.add_argument("--out", required=True, help="directory for reward_from_labels.pt and relabel.json")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--min-labels", type=int, default=10)
    p.add_argument("--fail-tail", type=int, default=10,
                   help="train on the last K frames of a failed episode only (0: every frame)")
    p.add_argument("--anchor", type=float, default=1.0,
                   help="with --fail-tail: keep d where it was on a failure's earlier frames (weight; 0 = off)")
    p.set_defaults(func=cmd_refine_labels)

    sub.add_parser("worker", add_help=False, help="the background worker (python -m core.worker --help)")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["worker"]:
        from core.worker import main as worker_main

        return worker_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "eval" and args.reward_checkpoint is None:
        sibling = Path(args.checkpoint).with_name("best_stg.pt")
        if sibling.exists():
            args.reward_checkpoint = str(sibling)
    try:
        result = args.func(args)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

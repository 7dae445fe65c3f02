"""Dojo command line: ``python -m core.cli <command> --help`` (the day-to-day options;
``--help-all`` lists the advanced ones too: ablations, speed, calibration, model shape).

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
import inspect
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from core import cli_data, cli_tasks  # the data and tasks commands, each in its own module
from core.method.jobs import json_object

DEFAULT_DATA_DIR = Path(os.environ.get("DOJO_DATA", "data"))


def _env_config(args) -> dict[str, Any]:
    """Backend config from --env-config JSON plus the per-backend shortcuts
    (--family for tabletop, --task for metaworld, --image-size for all)."""
    cfg: dict[str, Any] = json_object(getattr(args, "env_config", None), "--env-config") or {}
    backend = getattr(args, "backend", "tabletop")
    if backend == "tabletop":
        cfg.setdefault("family", args.family)
    if getattr(args, "task", None):
        cfg["task"] = args.task
    if getattr(args, "image_size", None):
        cfg["image_size"] = args.image_size
    return cfg


def _config_kwargs(cls, args) -> dict[str, Any]:
    """The parsed options that are fields of dataclass ``cls`` (None: the field's own default)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def sft_config(args):
    """The SFTConfig (with its PolicyConfig) that ``sft`` trains with."""
    from core.learning.policy import PolicyConfig
    from core.learning.sft import SFTConfig

    return SFTConfig(**_config_kwargs(SFTConfig, args), policy=PolicyConfig(**_config_kwargs(PolicyConfig, args)))


def practice_config(args):
    """The PracticeConfig that ``practice`` runs with."""
    from core.learning.practice import PracticeConfig

    kw = _config_kwargs(PracticeConfig, args)
    if "env_config" in kw:
        kw["env_config"] = json_object(kw["env_config"], "--env-config")
    return PracticeConfig(**kw)


def cmd_demos(args) -> dict[str, Any]:
    from core.learning.demos import generate_demos

    return generate_demos(args.out, args.n, backend=args.backend, env_config=_env_config(args),
                          seed0=args.seed0, workers=args.workers, progress=not args.quiet)


def cmd_sft(args) -> dict[str, Any]:
    from core.learning.sft import train_sft

    return train_sft(sft_config(args), progress=not args.quiet, resume=not args.fresh)


def cmd_eval(args) -> dict[str, Any]:
    """Evaluate --checkpoint (and --baseline on the same seeds). A checkpoint that cannot be
    evaluated raises EvaluationRefused (a ValueError): main prints it and exits with 2."""
    from core.learning.evaluate import evaluate_checkpoint

    def run(checkpoint: str, outcomes: list[int]) -> dict[str, Any]:
        return evaluate_checkpoint(checkpoint, args.episodes, reward_checkpoint=args.reward_checkpoint,
                                   data=args.data, threshold=args.threshold, patience=args.patience,
                                   tolerance=args.tolerance,
                                   seed0=args.seed0, n_envs=args.n_envs, device=args.device,
                                   progress=not args.quiet, backend=args.backend,
                                   env_config=json_object(args.env_config, "--env-config"), outcomes=outcomes)

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
    from core.learning.practice import run_practice

    return run_practice(practice_config(args), progress=not args.quiet)


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
    from core.learning.evaluate import evaluate_checkpoint
    from core.learning.sft import SFTConfig, train_sft

    sft = train_sft(SFTConfig(data=str(data), out=str(run), epochs=args.epochs,
                              eval_episodes=args.select_episodes), progress=True)
    print("[3/3] evaluation", flush=True)
    ev = evaluate_checkpoint(sft["best_policy"], args.eval_episodes, reward_checkpoint=sft["best_stg"])
    return {"demos": demos, "sft": {k: sft[k] for k in ("best_policy", "best_stg", "train_seconds")},
            "eval": ev, "minutes": (time.perf_counter() - t0) / 60}


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


EVAL_EPISODES = 200
"""Test seeds an ``eval`` (and the pipeline's evaluation) rolls out."""


def field_default(cls, name: str) -> Any:
    """The default of field ``name`` of dataclass ``cls``: options take their defaults from the
    config they fill, so each default is stated once, there."""
    f = next((f for f in dataclasses.fields(cls) if f.name == name), None)
    if f is None:
        raise ValueError(f"{cls.__name__} has no field {name!r}")
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise ValueError(f"{cls.__name__}.{name} has no default")


def param_default(fn, name: str) -> Any:
    """The default of keyword ``name`` of function ``fn``."""
    return inspect.signature(fn).parameters[name].default


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends an option's default to its help (not for flags and options without one)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.default is None or action.default is argparse.SUPPRESS or action.nargs == 0
                or not action.option_strings or "%(default)" in text):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class _HelpAll(argparse.Action):
    """``--help-all``: the subcommand's help with its advanced options too, then exit."""

    def __init__(self, option_strings, dest, build=None, **kw):
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0,
                         help="show every option, the advanced ones (ablations, speed, calibration, model) too, "
                         "and exit")
        self.build = build

    def __call__(self, parser, namespace, values, option_string=None):
        full = argparse.ArgumentParser(prog=parser.prog, description=parser.description,
                                       formatter_class=_HelpFormatter)
        full.add_argument("--help-all", action=_HelpAll, build=self.build)
        self.build(full, True)
        full.print_help()
        parser.exit()


def _advanced(p: argparse.ArgumentParser, show_all: bool, title: str):
    """An argument group that ``--help-all`` lists and ``--help`` hides (its options still work)."""
    g = p.add_argument_group(f"advanced: {title}")
    if not show_all:
        add = g.add_argument
        g.add_argument = lambda *a, **kw: add(*a, **{**kw, "help": argparse.SUPPRESS})
    return g


def _adder(cls):
    """``add(group, flag, ..., dest=...)``: an option that fills field ``dest`` of ``cls``
    (dest: from the first flag, as argparse derives it), with that field's default."""
    def add(g, *flags: str, **kw) -> None:
        dest = kw.pop("dest", flags[0].lstrip("-").replace("-", "_"))
        if not kw.get("required"):
            kw["default"] = field_default(cls, dest)
        g.add_argument(*flags, dest=dest, **kw)
    return add


def _demos_options(p: argparse.ArgumentParser, show_all: bool) -> None:
    p.add_argument("--out", required=True, help="dataset directory (made in <out>.partial-<pid>, renamed when "
                   "done; re-run to resume)")
    p.add_argument("--n", type=int, required=True, help="successful episodes wanted")
    p.add_argument("--backend", default="tabletop", help="tabletop, metaworld, gym or multitask")
    p.add_argument("--family", default="block2block", choices=["block2block", "block2location"],
                   help="tabletop instruction family")
    p.add_argument("--task", help="metaworld task name, e.g. push-v3")
    p.add_argument("--env-config", dest="env_config", help="backend config as a JSON object")
    p.add_argument("--image-size", dest="image_size", type=int, help="camera pixels (default: the backend's)")
    p.add_argument("--seed0", type=int, default=0, help="first environment seed")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="expert processes (default: cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _sft_options(p: argparse.ArgumentParser, show_all: bool) -> None:
    from core.learning.policy import PolicyConfig
    from core.learning.sft import KEYPOINT_LABELS, SFTConfig

    add = _adder(SFTConfig)
    add(p, "--data", required=True, help="dataset directory; several, comma-separated, train one "
        "multi-task model (evaluation then cycles through their tasks)")
    add(p, "--out", required=True, help="run directory (resumes from last.pt if present)")
    add(p, "--max-episodes", type=int, help="use only the first N episodes of each dataset (by seed; default: all)")
    add(p, "--epochs", type=int, help="passes over the training frames")
    add(p, "--batch-size", type=int, help="frames per gradient step")
    add(p, "--lr", type=float, help="AdamW peak learning rate")
    add(p, "--seed", type=int, help="split, initialisation and shuffling")
    add(p, "--eval-every", type=int, help="roll the policy out every N epochs to pick best_policy.pt (0 = never)")
    add(p, "--eval-episodes", type=int, help="selection rollouts per evaluation")
    add(p, "--device", help="auto (CUDA when available), cpu or cuda")
    add(p, "--max-minutes", type=float, help="stop training after this wall time (default: no limit)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    g = _advanced(p, show_all, "selection and speed")
    add(g, "--val-fraction", type=float, help="episodes held out for validation and detector calibration")
    add(g, "--stg-select", choices=["mae", "loss"], help="pick best_stg.pt by validation error of d(o, g) "
        "(mae) or by the steps-to-go cross-entropy (loss)")
    add(g, "--threads", type=int, help="torch CPU threads (0 = torch's default)")
    add(g, "--keypoint-labels", choices=list(KEYPOINT_LABELS),
        help="which goal-keypoint labels to use where the data has them: all (every one; first-frame clicks "
             "followed through the frames), first (frame 0's only), tracked (frame 0's followed through every "
             "frame) or none")

    add = _adder(PolicyConfig)
    g = _advanced(p, show_all, "model (PolicyConfig in core/learning/policy.py)")
    add(g, "--image-encoder", help="auto (by the data: with or without keypoint labels) | scratch | "
                                   "efficientnet_lite0 | efficientnet_lite1 | efficientnet_lite2 | mobilenet_v2 | "
                                   "hf:<local dir>")
    add(g, "--text-encoder", help="minilm | scratch | hf:<local dir>")
    add(g, "--trunk", help="bert | hf:<local dir>")
    add(g, "--no-proprio", dest="use_proprio", action="store_const", const=False,
        help="no proprioception token")
    add(g, "--unfreeze-image-encoder", dest="freeze_image_encoder", action="store_const", const=False,
        help="also train a pretrained image backbone's weights (frozen otherwise)")
    add(g, "--d-model", type=int, help="trunk width")
    add(g, "--n-layers", type=int, help="trunk transformer layers")
    add(g, "--action-bins", type=int, help="bins per action dimension")
    add(g, "--stg-cap", type=int, help="largest steps-to-go label")
    add(g, "--stg-bin-width", type=int, help="steps per steps-to-go bin")
    add(g, "--stg-label-sigma", type=float, help="0 = plain cross-entropy (paper); > 0 = HL-Gauss label "
        "spread in steps")
    add(g, "--no-film", dest="film", action="store_const", const=False,
        help="no FiLM conditioning of the image encoder on the instruction")
    add(g, "--no-grounding", dest="grounding", action="store_const", const=False,
        help="no cross-attention from instruction tokens to image positions")
    add(g, "--keypoint-query", choices=("sentence", "tokens"),
        help="goal keypoints read the sentence mean or pool the tokens per keypoint")


def _eval_options(p: argparse.ArgumentParser, show_all: bool) -> None:
    from core.learning.evaluate import evaluate_checkpoint

    def default(name: str) -> Any:
        return param_default(evaluate_checkpoint, name)

    p.add_argument("--checkpoint", required=True, help="policy checkpoint (e.g. best_policy.pt)")
    p.add_argument("--reward-checkpoint", help="steps-to-go model for the detector (default: best_stg.pt "
                   "beside --checkpoint if present, else the policy itself)")
    p.add_argument("--episodes", type=int, default=EVAL_EPISODES, help="test seeds to roll out")
    p.add_argument("--data", help="dataset for held-out calibration (default: the one it was trained on)")
    p.add_argument("--threshold", type=float, help="detector threshold s (default: calibrated)")
    # Not PracticeConfig.patience (2): eval scores the detector as Stage 1 calibrated it on
    # demonstrations, with patience 1; practice ends its episodes with patience 2.
    p.add_argument("--patience", type=int, default=default("patience"),
                   help="consecutive frames with d <= s before the detector fires")
    p.add_argument("--backend", help="evaluate on another backend than the checkpoint's (default: its own)")
    p.add_argument("--env-config", dest="env_config",
                   help="evaluate on another task, as a JSON backend config, e.g. "
                        "'{\"family\": \"block2location\", \"blocks\": [], \"objects\": [\"banana\"]}'")
    p.add_argument("--device", default=default("device"), help="auto (CUDA when available), cpu or cuda")
    p.add_argument("--baseline", help="another policy checkpoint to run on the same seeds; adds its success and "
                   "the paired gain of --checkpoint over it (95 %% interval, exact McNemar p)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = _advanced(p, show_all, "scoring, seeds and speed")
    g.add_argument("--tolerance", type=int, default=default("tolerance"),
                   help="steps before the goal at which a firing still counts as correct")
    g.add_argument("--seed0", type=int, default=default("seed0"), help="first test seed")
    g.add_argument("--n-envs", type=int, default=default("n_envs"), help="environments stepped together")


def _practice_options(p: argparse.ArgumentParser, show_all: bool) -> None:
    from core.learning.practice import PracticeConfig

    add = _adder(PracticeConfig)
    add(p, "--policy", dest="policy_checkpoint", required=True,
        help="starting policy (Stage-1 best_policy.pt or a practice checkpoint)")
    add(p, "--reward", dest="reward_checkpoint", required=True,
        help="frozen reward model / success detector (Stage-1 best_stg.pt)")
    add(p, "--out", required=True,
        help="run directory (resumes from its last completed iteration; the settings it started with, kept in "
             "its run.json, must stay the same except the budget, evaluation, stopping bars and fleet)")
    add(p, "--fleet-size", type=int, help="robots, one simulator each (0 = one per core)")

    add(p, "--backend", help="practise on another backend than the reward model's")
    add(p, "--env-config", help="practise on another task (JSON backend config), e.g. a new object: "
        "'{\"family\": \"block2location\", \"blocks\": [], \"objects\": [\"banana\"]}'")
    add(p, "--max-episodes", type=int, help="practice budget in episodes")
    add(p, "--lr", type=float, help="learning rate (>= 1e-4 destroyed the policy, docs/method.md)")
    add(p, "--threshold", dest="threshold_s", type=float, help="detector threshold s (default: calibrated)")
    add(p, "--patience", type=int, help="consecutive frames with d <= s before the detector fires")
    add(p, "--check-episodes", type=int, help="held-out rollouts for the pre-practice detector check (0 = skip)")
    add(p, "--eval-episodes", type=int, help="greedy evaluation episodes on the selection seeds")
    add(p, "--seed", type=int, help="same seed, same run")
    add(p, "--device", help="auto (CUDA when available), cpu or cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _practice_advanced(p, show_all, add)


def _practice_advanced(p: argparse.ArgumentParser, show_all: bool, add) -> None:
    g = _advanced(p, show_all, "evaluation and stopping")
    add(g, "--eval-every", type=int, help="evaluate every N iterations")
    add(g, "--plateau-evals", type=int, help="stop after this many evaluations without a new best")
    add(g, "--stop-after-drops", type=int, help="stop when this many evaluations in a row are below the start's "
        "beyond noise (paired on the same seeds): the policy is gaming the detector (0 = never)")
    add(g, "--min-precision", type=float, help="the detector check's bar on precision")
    add(g, "--min-recall", type=float, help="the detector check's bar on recall")

    g = _advanced(p, show_all, "the update (ablations)")
    add(g, "--gamma", type=float, help="discount")
    add(g, "--c", type=float, help="REINFORCE loss scale")
    add(g, "--weight-decay", type=float, help="AdamW weight decay")
    add(g, "--tuples", dest="tuples_per_iteration", type=int, help="tuples per iteration")
    add(g, "--minibatch", type=int, help="tuples per gradient step")
    add(g, "--train-vision", dest="freeze_vision", action="store_const", const=False,
        help="also update the image encoder (frozen otherwise)")
    add(g, "--trainable", choices=["policy", "action_head"],
        help="what the update trains (policy: all but the frozen vision)")
    add(g, "--baseline", choices=["none", "mean"], help="subtract the iteration's mean return (mean) or not")
    add(g, "--bc-weight", type=float, help="demonstration anchor (not in the paper): add this x the BC loss on "
        "the policy's own Stage-1 training demonstrations to every REINFORCE step (0 = off)")
    add(g, "--update-dropout", action="store_const", const=True,
        help="keep dropout on in the REINFORCE update (off otherwise: rollouts sample without it)")
    add(g, "--ground-truth-reward", action="store_const", const=True,
        help="oracle ablation: simulator success ends episodes and gives the reward")

    g = _advanced(p, show_all, "detector calibration and refinement with labels")
    add(g, "--calibration-beta", type=float, help="without --threshold, s maximises F-beta on half of the "
        "check rollouts (0.5: precision weighs twice recall; 1 = F1)")
    add(g, "--calibrate-on-demos", dest="calibrate_on_rollouts", action="store_const", const=False,
        help="without --threshold, calibrate s on demonstration endings alone, not on check rollouts")
    add(g, "--detector-tolerance", type=int, help="steps a detector may fire before ground truth and still "
        "count as right in the check and its calibration (0 = strict: an early fire is a miss)")
    add(g, "--refine-episodes", type=int, help="before the check, refine the reward model on N rollouts of the "
        "starting policy labeled by the simulator's ground truth (0 = the paper's label-free recipe)")
    add(g, "--refine-steps", type=int, help="gradient steps of the refinement")
    add(g, "--refine-every", type=int, help="refine the reward model again every N iterations on those "
        "iterations' labeled practice episodes; keeps a policy from gaming the detector (0 = off)")
    add(g, "--refine-memory", type=int, help="with --refine-every: also train each refinement on up to N "
        "earlier labeled episodes, so it does not forget")
    add(g, "--refine-keep-s", dest="refine_recalibrate", action="store_const", const=False,
        help="with --refine-every: keep s where the check put it instead of re-calibrating it at each refinement")
    add(g, "--refine-frozen-vision", dest="refine_train_vision", action="store_const", const=False,
        help="keep the reward model's image pathway frozen while refining (trained otherwise)")

    g = _advanced(p, show_all, "collection")
    add(g, "--finish-running", dest="finish_running_episodes", action="store_const", const=True,
        help="when an iteration's buffer is full, let the episodes under way run to their end and join it "
             "(before 2026-12-04; otherwise they are dropped)")
    add(g, "--plan-starts", action="store_const", const=True,
        help="start an episode only while the buffer plus the running episodes' expected tuples fall short of "
             "an iteration's; other robots wait")
    g = _advanced(p, show_all, "speed (the episodes stay the same)")
    add(g, "--rollout-groups", type=int, help="robot groups stepping in turn while the next group's inference "
        "runs (1 = lock-step; 0 = 2 for a process fleet of >= 4 robots)")
    add(g, "--rollout-threads", type=int, help="the learner's torch threads while robots roll out (default: "
        "torch's); 1 leaves the simulators a core on a 2-core machine")
    add(g, "--no-compile", dest="compile", action="store_const", const=False,
        help="eager rollout forward passes instead of torch.compile'd ones (or DOJO_NO_COMPILE=1)")
    add(g, "--in-process", dest="fleet_kind", action="store_const", const="local",
        help="simulators in this process instead of one process per robot (--fleet local)")
    g = _advanced(p, show_all, "where the robots run (docs/cluster.md)")
    add(g, "--fleet", dest="fleet_kind", choices=["process", "local", "ray"],
        help="one simulator process per robot on this machine (default), all in this process, or Ray actors "
             "across a cluster's nodes")
    add(g, "--ray-address", help="with --fleet ray: the cluster, 'auto' or HOST:PORT (default: Ray on this machine)")


def _pipeline_options(p: argparse.ArgumentParser, show_all: bool) -> None:
    from core.learning.sft import SFTConfig

    p.add_argument("--root", default=str(DEFAULT_DATA_DIR), help="where demos/ and runs/ go (or DOJO_DATA)")
    p.add_argument("--demos", type=int, default=400, help="demonstrations")
    # Not SFTConfig.epochs (20): the bundled task's quick end-to-end run stops at 15.
    p.add_argument("--epochs", type=int, default=15, help="Stage-1 epochs")
    p.add_argument("--select-episodes", type=int, default=field_default(SFTConfig, "eval_episodes"),
                   help="selection rollouts per Stage-1 evaluation")
    p.add_argument("--eval-episodes", type=int, default=EVAL_EPISODES, help="test seeds of the final evaluation")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="expert processes (default: cores)")


def _refine_labels_options(p: argparse.ArgumentParser, show_all: bool) -> None:
    p.add_argument("--db", default=None, help="database URL or SQLite path (default: DOJO_DB, data/dojo.sqlite)")
    p.add_argument("--session", type=int, required=True, help="practice session whose labels/overrides to use")
    p.add_argument("--reward", default=None, help="reward checkpoint (default: the one the session ran with)")
    p.add_argument("--out", required=True, help="directory for reward_from_labels.pt and relabel.json")
    p.add_argument("--steps", type=int, default=300, help="gradient steps")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate")
    p.add_argument("--min-labels", type=int, default=10, help="refuse with fewer judged episodes")
    p.add_argument("--fail-tail", type=int, default=10,
                   help="train on the last K frames of a failed episode only (0: every frame)")
    p.add_argument("--anchor", type=float, default=1.0,
                   help="with --fail-tail: keep d where it was on a failure's earlier frames (weight; 0 = off)")


COMMANDS = {
    "demos": ("generate scripted-expert demonstrations (resumable)", _demos_options, cmd_demos),
    "sft": ("Stage 1: train BC + steps-to-go on a dataset", _sft_options, cmd_sft),
    "eval": ("evaluate a checkpoint", _eval_options, cmd_eval),
    "practice": ("Stage 2: self-improvement (REINFORCE, frozen steps-to-go reward)", _practice_options,
                 cmd_practice),
    "pipeline": ("demos -> sft -> eval on the bundled Block2Block task", _pipeline_options, cmd_pipeline),
    "refine-labels": ("re-train a reward model's steps-to-go head on a session's judged episodes in the "
                      "database (the web app's refine job)", _refine_labels_options, cmd_refine_labels),
    "data": cli_data.COMMAND,  # import | export
    "tasks": cli_tasks.COMMAND,  # catalog | add | list
}


def build_parser(only: str | None = None, show_all: bool = False) -> argparse.ArgumentParser:
    """The CLI's parser. ``only``: build just that subcommand's options (the others are listed
    but empty; their builders import torch); ``show_all``: advanced options in --help too."""
    ap = argparse.ArgumentParser(prog="python -m core.cli", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    for name, (text, options, func) in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text, formatter_class=_HelpFormatter)
        if only is None or only == name:
            p.add_argument("--help-all", action=_HelpAll, build=options)
            options(p, show_all)
        p.set_defaults(func=func)
    sub.add_parser("worker", add_help=False, help="the background worker (python -m core.worker --help)")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["worker"]:
        from core.worker import main as worker_main

        return worker_main(argv[1:])
    args = build_parser(only=argv[0] if argv else "").parse_args(argv)
    if args.command == "eval" and args.reward_checkpoint is None:
        sibling = Path(args.checkpoint).with_name("best_stg.pt")
        if sibling.exists():
            args.reward_checkpoint = str(sibling)
    try:
        result = args.func(args)
    except (ValueError, RuntimeError, OSError) as e:  # OSError: a path that cannot be read or written
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Stage 1: supervised fine-tuning of the BC + steps-to-go policy on demonstrations.

Reads top to bottom: split episodes (held-out by episode), train for a number of
epochs, after each epoch measure validation losses and keep ``best_stg.pt`` (the
reward-model candidate, by steps-to-go validation loss); every ``eval_every``
epochs roll the policy out on fixed selection seeds and keep ``best_policy.pt``
(by evaluated success; the paper found BC validation loss a poor guide). ``last.pt``
holds the optimizer too, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from core.files import atomic_write_bytes
from core.learning.checkpoint import CheckpointError, check_run_settings, read_checkpoint, save_checkpoint
from core.learning.device import resolve_device
from core.learning.dataset import (DatasetError, Episode, FrameTable, episodes_fingerprint, held_out_key,
                                   labels_fingerprint, load_datasets)
from core.learning.evaluate import calibrate_on_demos, evaluate_policy
from core.method.seeds import SELECT_SEED0
from core.learning.policy import DojoPolicy, PolicyConfig, resolve_image_encoder


# Stage-1 settings a resumed run may change: where the data lives (checked by name and
# content apart), evaluation cadence, threads, device, and the budget: more --epochs or
# --max-minutes train on (the cosine schedule is then stretched over the new total, so the
# learning rate steps back up; metrics.jsonl logs it per epoch). Any other change (model,
# learning rate, batch, seed, which episodes) is refused: the run would go on as another.
SFT_MAY_CHANGE = frozenset({"data", "out", "eval_every", "eval_episodes", "threads", "device", "max_minutes",
                            "epochs"})


@dataclass(frozen=True)
class SFTConfig:
    """Stage-1 training settings; stored as run.json in the run directory."""

    data: str
    """Dataset directory (see core/learning/dataset.py); several, comma-separated, train one model
    on all of them (a multi-task run: evaluation then cycles through their tasks)."""
    out: str
    """Run directory for checkpoints and logs."""
    max_episodes: int | None = None
    """Use only the first N episodes of each dataset (by seed), e.g. 10% of a pool."""
    val_fraction: float = 0.1
    """Fraction of episodes held out for validation and detector calibration."""
    epochs: int = 20
    """Passes over the training frames."""
    batch_size: int = 64
    """Frames per gradient step."""
    lr: float = 1e-3
    """AdamW peak learning rate (linear warm-up, then cosine decay to 10%)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    seed: int = 0
    """Seeds python, numpy and torch (split, init, shuffling)."""
    eval_every: int = 5
    """Evaluate success every N epochs (and at the end) to keep best_policy.pt; 0 = never."""
    eval_episodes: int = 50
    """Episodes per selection evaluation (seeds disjoint from demos and the test set)."""
    threads: int = 0
    """torch CPU threads; 0 = torch's default."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu' or 'cuda'."""
    stg_select: str = "mae"
    """How best_stg.pt (the reward-model candidate) is picked: "mae" = validation error of the
    expected steps-to-go d(o, g), the quantity reward and detector use; "loss" = validation
    cross-entropy of the steps-to-go head. Measured (1,000 demos, 12 epochs): the
    cross-entropy bottomed at epoch 6 (MAE 3.16) while the MAE kept falling to 2.94 at
    epochs 9-11 — the head grows over-confident, which cross-entropy punishes and d does not feel."""
    max_minutes: float | None = None
    """Stop training after this wall time (then evaluate and save as usual)."""
    keypoint_labels: str = "all"
    """Which goal-keypoint labels Stage 1 uses, where the data has them: "all" (every label the
    data has: a simulator's on every frame; where a demonstration has labels on some frames only,
    such as a reviewer's first-frame clicks from the Keypoints page, the others are filled by
    following frame 0's through the frames, as "tracked": measured, the clicks tracked trained as
    well as the simulator's labels, and the clicks alone did not), "first" (each demonstration's
    first frame only), "tracked" (frame 0's followed through every other frame by
    ``core.learning.keypoint_tracks``) or "none"."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """The model to train."""

    def __post_init__(self):
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.stg_select not in ("mae", "loss"):
            raise ValueError(f"stg_select must be 'mae' or 'loss', got {self.stg_select!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        # The rest fail late otherwise (max_episodes=0 as "no episodes" after loading, a
        # non-positive lr or budget as a run that learns nothing): refused before any work.
        if self.max_episodes is not None and self.max_episodes < 1:
            raise ValueError(f"max_episodes (--max-episodes) must be at least 1 (per dataset), got "
                             f"{self.max_episodes}; leave it out to use every episode")
        if not self.lr > 0:
            raise ValueError(f"lr (--lr) must be > 0, got {self.lr}")
        if self.eval_every < 0 or self.eval_episodes < 0 or self.threads < 0:
            raise ValueError(f"eval_every, eval_episodes and threads must be >= 0 (0 = never / torch's default), "
                             f"got {self.eval_every}, {self.eval_episodes}, {self.threads}")
        if self.keypoint_labels not in KEYPOINT_LABELS:
            raise ValueError(f"keypoint_labels must be one of {KEYPOINT_LABELS}, got {self.keypoint_labels!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes (--max-minutes) must be > 0, got {self.max_minutes}; leave it out for "
                             "no limit")


KEYPOINT_LABELS = ("all", "first", "tracked", "none")


def keep_keypoint_labels(e: Episode, which: str) -> Episode:
    """``e`` with the keypoint labels ``which`` gives (SFTConfig.keypoint_labels): "first" and
    "none" make the others unknown (NaN, which the auxiliary loss skips); "tracked" and "all" fill
    frames from frame 0's, followed through them."""
    if e.keypoints is None or (which == "all" and np.isfinite(e.keypoints).all()):
        return e
    if which == "none":
        return dataclasses.replace(e, keypoints=None)
    if which in ("tracked", "all"):
        from core.learning.keypoint_tracks import track_points

        tracked = track_points(e.frames, e.keypoints[0])
        # "all" keeps every label given and tracks only the frames without one.
        kp = np.where(np.isfinite(e.keypoints), e.keypoints, tracked) if which == "all" else tracked
        return dataclasses.replace(e, keypoints=kp.astype(np.float32))
    kp = np.full_like(e.keypoints, np.nan)
    kp[0] = e.keypoints[0]
    return dataclasses.replace(e, keypoints=kp)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def split_episodes(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Held-out split by episode (never by frame: frames of one episode are near-duplicates)."""
    idx = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction))) if n > 1 else 0
    return sorted(idx[n_val:].tolist()), sorted(idx[:n_val].tolist())


@torch.no_grad()
def validation_losses(model: DojoPolicy, table: FrameTable, batch_size: int = 256) -> dict[str, float]:
    model.eval()
    sums: dict[str, float] = {}
    n = 0
    for start in range(0, len(table), batch_size):
        idx = np.arange(start, min(start + batch_size, len(table)))
        _, m = model(table.batch(idx, model.config.n_frames, model.config.action_bins))
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + v * len(idx)
        n += len(idx)
    return {f"val_{k}": v / max(1, n) for k, v in sums.items()}


@dataclass
class _SFTData:
    """The episodes of one Stage-1 run, split by episode, and the model config they imply."""

    meta: dict[str, Any]
    train_eps: list[Episode]
    val_eps: list[Episode]
    pcfg: PolicyConfig
    train_table: FrameTable
    val_table: FrameTable
    fingerprint: str
    labels_fingerprint: str


@dataclass
class _SFTRun:
    """What one Stage-1 run carries from epoch to epoch."""

    cfg: SFTConfig
    out: Path
    data: _SFTData
    model: DojoPolicy
    params: list[torch.nn.Parameter]
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    steps_per_epoch: int
    state: dict[str, Any]
    calib: dict[str, Any] = field(default_factory=dict)
    saved: int = 0
    """Checkpoints this call has written (a failure before the first leaves the run folder as it was)."""

    def save(self, name: str, meta: dict[str, Any], optimizer: torch.optim.Optimizer | None = None) -> None:
        save_checkpoint(self.out / name, self.model, meta, optimizer=optimizer)
        self.saved += 1

    def ckpt_meta(self, extra: dict[str, Any]) -> dict[str, Any]:
        d = self.data
        return {"stage": "sft", "backend": d.meta["backend"], "env_config": d.meta["env_config"],
                "dataset": str(self.cfg.data), "data_fingerprint": d.fingerprint,
                "labels_fingerprint": d.labels_fingerprint, "train_episodes": len(d.train_eps),
                "val_seeds": [e.seed for e in d.val_eps], "val_keys": [held_out_key(e) for e in d.val_eps],
                "train_state": dict(self.state), **self.calib, **extra}


def _prepare_data(cfg: SFTConfig) -> _SFTData:
    """Load the episodes, hold some out by episode, and fit the model config to their shapes."""
    meta, episodes = load_datasets(cfg.data, cfg.max_episodes)
    if len(episodes) < 2:  # one alone would leave the validation split empty (more datasets give >= 2)
        fix = ("raise --max-episodes" if cfg.max_episodes == 1 else
               f"generate more with `python -m core.cli demos --out {cfg.data} --n 10` and the options it was "
               "made with (its dataset.json)")
        raise DatasetError(f"{cfg.data} holds only 1 episode to train on; Stage 1 needs at least 2 (one is held "
                           f"out for validation): {fix}")
    labels = labels_fingerprint(episodes)  # the stored labels, before 'tracked' derives the other frames'
    episodes = [keep_keypoint_labels(e, cfg.keypoint_labels) for e in episodes]
    train_ids, val_ids = split_episodes(len(episodes), cfg.val_fraction, cfg.seed)
    train_eps = [episodes[i] for i in train_ids]
    val_eps = [episodes[i] for i in val_ids]
    if not train_eps:
        raise ValueError(f"need at least 2 episodes to train with a held-out split, got {len(episodes)}")
    h, w = episodes[0].frames.shape[1:3]
    pcfg = cfg.policy
    if (h, w) != (pcfg.image_size, pcfg.image_size) or episodes[0].proprio.shape[1] != pcfg.proprio_dim:
        pcfg = dataclasses.replace(pcfg, image_size=h, proprio_dim=episodes[0].proprio.shape[1],
                                   action_dim=episodes[0].actions.shape[1])
    # 'auto': the image encoder that measured best on data like this (with or without keypoint labels).
    labelled = any(e.keypoints is not None for e in episodes)
    pcfg = resolve_image_encoder(pcfg, has_keypoints=labelled)
    if not labelled and pcfg.goal_keypoints and pcfg.keypoint_aux_weight > 0:
        logging.getLogger("dojo.sft").warning(
            "%s: no goal-keypoint labels in these demonstrations; measured on the tabletop, Stage 1 then did not "
            "learn steps-to-go (error ~8-9 steps against ~4 with labels) and practice gained nothing. Click the "
            "object and its target on each demonstration's first frame (the web app's Keypoints page; or write "
            "frame 0's keypoints, docs/dataset-format.md): Stage 1 follows them through the frames "
            "(docs/method.md, 'Where the keypoint labels are needed')", cfg.data)
    if meta.get("action_low") is not None:  # an imported dataset's units: the checkpoint maps actions back to them
        pcfg = dataclasses.replace(pcfg, action_low=tuple(meta["action_low"]), action_high=tuple(meta["action_high"]))
    train_table, val_table = FrameTable.from_episodes(train_eps), FrameTable.from_episodes(val_eps)
    return _SFTData(meta=meta, train_eps=train_eps, val_eps=val_eps, pcfg=pcfg, train_table=train_table,
                    val_table=val_table, fingerprint=episodes_fingerprint(train_eps + val_eps),
                    labels_fingerprint=labels)


def _check_resumable(cfg: SFTConfig, out: Path, data: _SFTData) -> None:
    """Refuse to resume ``out/last.pt`` on other data or other settings (before anything is rewritten)."""
    last = out / "last.pt"
    was = read_checkpoint(last).get("meta", {})
    names = lambda spec: [Path(x.strip()).name for x in str(spec).split(",") if x.strip()]  # noqa: E731
    for key, now, same in (("dataset", str(cfg.data), lambda a, b: names(a) == names(b)),
                           ("env_config", data.meta["env_config"], lambda a, b: a == b)):
        if key in was and not same(was[key], now):
            raise CheckpointError(
                f"{last}: cannot resume, it was trained on a different {key} ({str(was[key])[:200]}; now "
                f"{str(now)[:200]}); train with --fresh to start over, or choose another --out")
    # The settings before the content (another seed splits the episodes otherwise: named as such).
    check_run_settings(out / "run.json", "sft", dataclasses.asdict(dataclasses.replace(cfg, policy=data.pcfg)),
                       SFT_MAY_CHANGE, f"Train with the settings it started with, or start over (sft --fresh, "
                       f"or delete {out}), or choose another --out.")
    if "data_fingerprint" in was and was["data_fingerprint"] != data.fingerprint:
        raise CheckpointError(
            f"{last}: cannot resume, the episodes in {cfg.data} changed since it was trained (same names, other "
            f"content: regenerated or edited; fingerprint {was['data_fingerprint']}, now {data.fingerprint}); "
            f"train with --fresh to start over, or choose another --out")
    if "labels_fingerprint" in was and was["labels_fingerprint"] != data.labels_fingerprint:
        raise CheckpointError(
            f"{last}: cannot resume, the keypoint labels in {cfg.data} changed since it was trained (clicks saved "
            "on the Keypoints page, or the files edited); train with --fresh to start over on them, or choose "
            "another --out")


def _write_run_info(cfg: SFTConfig, out: Path, data: _SFTData) -> None:
    run_info = {"sft": dataclasses.asdict(dataclasses.replace(cfg, policy=data.pcfg)),
                "backend": data.meta["backend"], "env_config": data.meta["env_config"],
                "train_episodes": len(data.train_eps), "val_episodes": len(data.val_eps),
                "train_frames": len(data.train_table)}
    atomic_write_bytes(out / "run.json", json.dumps(run_info, indent=2, default=str).encode())


def _build_run(cfg: SFTConfig, out: Path, data: _SFTData, device: torch.device) -> _SFTRun:
    """A fresh model (its initialisation draws from torch's seeded generator), AdamW and the schedule."""
    model = DojoPolicy(data.pcfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(data.train_table) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = min(200, max(1, total_steps // 20))

    def lr_factor(s: int) -> float:  # linear warm-up, then cosine decay to 10%
        if s < warmup:
            return (s + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, total_steps - warmup))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    state = {"epoch": 0, "best_stg_score": float("inf"), "best_success": -1.0, "train_seconds": 0.0}
    return _SFTRun(cfg=cfg, out=out, data=data, model=model, params=params, opt=opt, sched=sched,
                   steps_per_epoch=steps_per_epoch, state=state)


def _resume_from(run: _SFTRun, last: Path) -> None:
    """Load weights, optimizer and train state from ``last`` and fast-forward the schedule."""
    payload = read_checkpoint(last)
    try:
        run.model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(
            f"{last}: cannot resume, it was written by a different model ({str(e).splitlines()[-1].strip()[:200]}); "
            f"train with --fresh to start over, or choose another --out") from e
    if "optimizer" in payload:
        run.opt.load_state_dict(payload["optimizer"])
    run.state.update(payload["meta"].get("train_state", {}))
    with warnings.catch_warnings():  # fast-forwarding the schedule: no optimizer step is due
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
        for _ in range(run.state["epoch"] * run.steps_per_epoch):
            run.sched.step()


def _train_one_epoch(run: _SFTRun, epoch: int, rng: np.random.Generator, progress: bool) -> dict[str, float]:
    """One shuffled pass over the training frames; returns the summed per-step metrics."""
    from tqdm import tqdm

    cfg, pcfg, model = run.cfg, run.data.pcfg, run.model
    model.train()
    perm = rng.permutation(len(run.data.train_table))
    sums: dict[str, float] = {}
    bar = tqdm(range(run.steps_per_epoch), desc=f"sft epoch {epoch + 1}/{cfg.epochs}",
               disable=not progress, leave=False)
    for step in bar:
        idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        loss, m = model(run.data.train_table.batch(idx, pcfg.n_frames, pcfg.action_bins))
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.params, 1.0)
        run.opt.step()
        run.sched.step()
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + v
        if step % 10 == 0:
            bar.set_postfix(loss=f"{m['loss']:.3f}", stg_mae=f"{m['stg_mae']:.2f}")
    return sums


def _end_of_epoch(run: _SFTRun, epoch: int, sums: dict[str, float], t_start: float) -> tuple[dict[str, Any], bool]:
    """Validate, keep best_stg.pt (and recalibrate), evaluate for best_policy.pt when due, save last.pt.

    Returns the epoch's metrics row and whether the time budget ran out.
    """
    cfg, state, model = run.cfg, run.state, run.model
    state["epoch"] = epoch + 1
    state["train_seconds"] = time.perf_counter() - t_start
    row = {"epoch": epoch + 1, **{f"train_{k}": v / run.steps_per_epoch for k, v in sums.items()},
           **validation_losses(model, run.data.val_table), "seconds": state["train_seconds"],
           "lr": run.sched.get_last_lr()[0]}
    out_of_time = cfg.max_minutes is not None and state["train_seconds"] > cfg.max_minutes * 60
    final = epoch + 1 == cfg.epochs or out_of_time
    key = "val_stg_mae" if cfg.stg_select == "mae" else "val_stg_loss"
    if row[key] < state.get("best_stg_score", float("inf")):
        state["best_stg_score"] = row[key]
        run.calib = calibrate_on_demos(model, run.data.val_eps)
        run.save("best_stg.pt", run.ckpt_meta({"selected_by": key, key: row[key],
                                               "val_stg_loss": row["val_stg_loss"]}))
        row["saved_best_stg"] = True
    row.update({k: run.calib[k] for k in ("threshold_s", "stg_mae_steps") if k in run.calib})
    if cfg.eval_every and cfg.eval_episodes and ((epoch + 1) % cfg.eval_every == 0 or final):
        meta = run.data.meta
        report, _ = evaluate_policy(model, meta["backend"], meta["env_config"], cfg.eval_episodes,
                                    run.calib.get("threshold_s", 1.0), seed0=SELECT_SEED0)
        row["select_success"] = report.success
        if report.success > state["best_success"]:
            state["best_success"] = report.success
            run.save("best_policy.pt",
                     run.ckpt_meta({"selected_by": "select_success", "select_success": report.success}))
            row["saved_best_policy"] = True
    run.save("last.pt", run.ckpt_meta({}), optimizer=run.opt)
    return row, out_of_time


def _log_epoch(out: Path, row: dict[str, Any], progress: bool) -> None:
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    if progress:
        from tqdm import tqdm

        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
        tqdm.write(json.dumps(shown))


def _final_summary(run: _SFTRun, last_row: dict[str, Any]) -> dict[str, Any]:
    """Make sure best_policy.pt exists (the last weights when never evaluated) and summarise the run."""
    out = run.out
    if not (out / "best_policy.pt").exists():
        run.save("best_policy.pt", run.ckpt_meta({"selected_by": "last"}))
    return {"run_dir": str(out), "best_stg": str(out / "best_stg.pt"),
            "best_policy": str(out / "best_policy.pt"), "train_seconds": run.state["train_seconds"],
            "best_select_success": run.state["best_success"], "last": last_row, "calibration": run.calib}


def _check_out(out: Path) -> None:
    """Refuse an --out that cannot become a run folder, before the data is even read."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a run folder; choose another --out")
    where = out if out.exists() else next(p for p in out.parents if p.exists())
    if not where.is_dir() or not os.access(where, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write the run folder {out}: {where} is not a folder this user may write in; "
                         "choose another --out")


def _undo_start(run: _SFTRun, made: list[Path], run_json: bytes | None) -> None:
    """After a failure before this call saved any checkpoint: put run.json back as it was
    (removed if it was not there) and remove the folders this call made if they are empty,
    so a run folder is left as it was found. Once a checkpoint is saved everything stays:
    the same command resumes from last.pt, and best_stg.pt is already a usable reward model."""
    if run.saved:
        return
    info = run.out / "run.json"
    if run_json is None:
        info.unlink(missing_ok=True)
    else:
        atomic_write_bytes(info, run_json)
    for p in made:
        try:
            p.rmdir()
        except OSError:
            break  # not empty: something else was put there, not ours to remove


def train_sft(cfg: SFTConfig, *, progress: bool = True, resume: bool = True,
              callback: Callable[[dict[str, Any]], bool | None] | None = None) -> dict[str, Any]:
    """Train; returns a summary (paths of best checkpoints, final metrics).

    ``callback(event)`` receives a dict after every epoch; returning False stops early
    (how the UI's cancel reaches the trainer).
    """
    out = Path(cfg.out)
    _check_out(out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        device = resolve_device(cfg.device)
    except RuntimeError as e:  # torch lists every device type it knows; say the ones Dojo trains on
        raise ValueError(f"--device {cfg.device!r} is not usable here ({e}); use auto, cpu or cuda") from e
    seed_everything(cfg.seed)
    data = _prepare_data(cfg)  # reads and validates every episode file
    last = out / "last.pt"
    resuming = resume and last.exists()
    if resuming:
        _check_resumable(cfg, out, data)
    run = _build_run(cfg, out, data, device)
    if resuming:
        _resume_from(run, last)
    if run.model.feature_key is not None:  # a frozen backbone: each demonstration frame is encoded once
        for table in (data.train_table, data.val_table):
            table.cache_features(run.model.frozen_features)
    # Everything that can be checked was: only now is the run folder made and run.json written.
    # Training writes checkpoints as it goes, so there is no folder to rename at the end; a
    # failure before the first checkpoint undoes this start (_undo_start).
    made = [p for p in (out, *out.parents) if not p.exists()]
    run_json = (out / "run.json").read_bytes() if (out / "run.json").exists() else None
    try:
        out.mkdir(parents=True, exist_ok=True)
        _write_run_info(cfg, out, data)
        rng = np.random.default_rng(cfg.seed + 1000 * run.state["epoch"])
        t_start = time.perf_counter() - run.state["train_seconds"]
        summary: dict[str, Any] = {}
        for epoch in range(run.state["epoch"], cfg.epochs):
            sums = _train_one_epoch(run, epoch, rng, progress)
            row, out_of_time = _end_of_epoch(run, epoch, sums, t_start)
            _log_epoch(out, row, progress)
            summary = row
            if callback is not None and callback({"event": "epoch", **row}) is False:
                break
            if out_of_time:
                break
        return _final_summary(run, summary)
    except BaseException:
        _undo_start(run, made, run_json)
        raise

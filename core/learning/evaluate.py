"""Evaluation: success rate with an interval, the detector against ground truth,
threshold calibration and steps-to-go error on held-out demonstrations.

``evaluate_checkpoint`` is the whole job on checkpoint files (the CLI's ``eval``, the
worker's eval job and the benches call it); it raises ``EvaluationRefused`` instead of
exiting, so a long-running caller survives a checkpoint it cannot evaluate."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Sequence

import numpy as np
import torch

from core.method.detector import DEFAULT_TOLERANCE, DetectorCounts, calibrate_threshold, score_episode
from core.learning.checkpoint import load_checkpoint
from core.learning.dataset import Episode, FrameTable, held_out_episodes
from core.learning.policy import DojoPolicy
from core.learning.rollout import EpisodeRecord, RolloutHooks, run_episodes
from core.method.stats import precision_recall_f1, wilson_interval
from sim_backends.registry import make_env

from core.method.seeds import EVAL_SEED0


class EvaluationRefused(ValueError):
    """A checkpoint cannot be evaluated as asked (e.g. no detector threshold can be found);
    the message names the problem and the fix."""


@dataclass
class EvalReport:
    episodes: int
    success: float
    success_ci: tuple[float, float]
    mean_length: float
    threshold_s: float
    patience: int
    tolerance: int
    detector_precision: float
    detector_recall: float
    detector_f1: float
    detector_counts: dict[str, int]
    end_reasons: dict[str, int]
    env_steps: int
    seconds: float
    per_task: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Multi-task backends: {task name: {episodes, success, success_ci}}."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def demo_steps_to_go(model: DojoPolicy, episodes: Sequence[Episode], batch_size: int = 256
                     ) -> list[np.ndarray]:
    """d(o_t, g) for every frame of each demonstration episode."""
    model.eval()
    table = FrameTable.from_episodes(list(episodes))
    out = np.zeros(len(table), np.float32)
    for start in range(0, len(table), batch_size):
        idx = np.arange(start, min(start + batch_size, len(table)))
        batch = table.batch(idx, model.config.n_frames, model.config.action_bins)
        out[idx] = model.steps_to_go(batch).cpu().numpy()
    return [out[table.episode_id == k] for k in range(len(episodes))]


def calibrate_on_demos(model: DojoPolicy, episodes: Sequence[Episode], patience: int = 1,
                       tolerance: int = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """Pick the detector threshold s on held-out demonstrations and measure steps-to-go MAE.

    In a demonstration the goal is first reached at its goal frame (the last, unless the
    demo went on holding the goal): from there on a frame is the detector's positive, every
    earlier frame a negative.
    """
    d_seqs = demo_steps_to_go(model, episodes)
    gts = [np.arange(len(d)) >= e.goal_index for d, e in zip(d_seqs, episodes)]
    s, counts = calibrate_threshold(list(zip(d_seqs, gts)), patience=patience, tolerance=tolerance)
    p, r, f1 = precision_recall_f1(counts)
    cap = model.config.stg_cap
    errs = np.concatenate([np.abs(d - np.minimum(e.steps_to_go(), cap)) for d, e in zip(d_seqs, episodes)])
    final = np.concatenate([d[g] for d, g in zip(d_seqs, gts)])
    rest = np.concatenate([d[~g] for d, g in zip(d_seqs, gts)])
    return {"threshold_s": s, "patience": patience, "tolerance": tolerance, "demo_precision": p, "demo_recall": r,
            "demo_f1": f1, "stg_mae_steps": float(errs.mean()),
            "d_final_mean": float(final.mean()), "d_other_mean": float(rest.mean()),
            "episodes": len(episodes)}


def per_task_success(records: Sequence[EpisodeRecord]) -> dict[str, dict[str, Any]]:
    """Success per task for records of a multi-task backend ({} when there is one task)."""
    groups: dict[str, list[bool]] = {}
    for r in records:
        if r.task:
            groups.setdefault(r.task, []).append(r.success)
    return {t: {"episodes": len(v), "success": sum(v) / len(v), "success_ci": wilson_interval(sum(v), len(v))}
            for t, v in groups.items()}


def score_records(records: Sequence[EpisodeRecord], threshold_s: float, patience: int = 1,
                  tolerance: int = DEFAULT_TOLERANCE) -> tuple[DetectorCounts, tuple[float, float, float]]:
    counts = DetectorCounts()
    for r in records:
        counts = counts + score_episode(r.d, r.gt, threshold_s, patience, tolerance)
    return counts, precision_recall_f1(counts)


def evaluate_policy(model: DojoPolicy, backend: str, env_config: dict[str, Any], n_episodes: int,
                    threshold_s: float, *, patience: int = 1, tolerance: int = DEFAULT_TOLERANCE,
                    seed0: int = EVAL_SEED0,
                    n_envs: int = 16, greedy: bool = True, reward_model: DojoPolicy | None = None,
                    progress=None) -> tuple[EvalReport, list[EpisodeRecord]]:
    """Roll out ``n_episodes`` fixed seeds; episodes end at ground-truth success or the limit."""
    seeds = list(range(seed0, seed0 + n_episodes))
    t0 = time.perf_counter()
    records = run_episodes(model, partial(make_env, backend, env_config), seeds, n_envs=n_envs,
                           greedy=greedy, reward_model=reward_model,
                           hooks=RolloutHooks(on_episode=progress))
    seconds = time.perf_counter() - t0
    n_ok = sum(r.success for r in records)
    counts, (p, r, f1) = score_records(records, threshold_s, patience, tolerance)
    reasons: dict[str, int] = {}
    for rec in records:
        reasons[rec.end_reason] = reasons.get(rec.end_reason, 0) + 1
    report = EvalReport(
        episodes=len(records), success=n_ok / max(1, len(records)),
        success_ci=wilson_interval(n_ok, len(records)),
        mean_length=float(np.mean([rec.length for rec in records])) if records else 0.0,
        threshold_s=threshold_s, patience=patience, tolerance=tolerance, detector_precision=p, detector_recall=r,
        detector_f1=f1, detector_counts=asdict(counts), end_reasons=reasons,
        env_steps=int(sum(rec.length for rec in records)), seconds=seconds,
        per_task=per_task_success(records))
    return report, records


def evaluate_checkpoint(checkpoint: str, episodes: int, *, reward_checkpoint: str | None = None,
                        data: str | None = None, threshold: float | None = None, patience: int = 1,
                        tolerance: int | None = DEFAULT_TOLERANCE, seed0: int | None = EVAL_SEED0, n_envs: int = 16,
                        device: str = "auto", progress: bool = True, backend: str | None = None,
                        env_config: dict[str, Any] | None = None,
                        outcomes: list[int] | None = None) -> dict[str, Any]:
    """Roll out the policy in ``checkpoint`` on ``episodes`` test seeds, with the detector of
    ``reward_checkpoint`` (default: the policy itself) scored against ground truth.

    The threshold s is ``threshold`` if given, else calibrated on the reward model's held-out
    demonstrations (from ``data`` or the dataset it was trained on), else the one stored in
    the reward checkpoint; with none of them, ``EvaluationRefused``. ``patience`` defaults to
    1, the patience Stage 1 calibrates s with on demonstrations (practice ends its episodes
    with 2, ``PracticeConfig.patience``). ``backend`` / ``env_config`` evaluate on another
    task than the checkpoint was trained on (e.g. a new object); by default, the
    checkpoint's own. A list passed as ``outcomes`` receives the ground-truth success of
    every seed, in seed order (for paired comparisons)."""
    from tqdm import tqdm

    from core.learning.device import resolve_device
    from sim_backends.multitask import resolve_task

    tolerance = DEFAULT_TOLERANCE if tolerance is None else tolerance
    seed0 = EVAL_SEED0 if seed0 is None else seed0
    dev = resolve_device(device)
    policy, meta = load_checkpoint(checkpoint, dev)
    reward_path = reward_checkpoint or checkpoint
    reward, reward_meta = (policy, meta) if reward_path == checkpoint else load_checkpoint(reward_path, dev)
    out: dict[str, Any] = {"checkpoint": checkpoint, "reward_checkpoint": reward_path}
    held = held_out_episodes(reward_meta, data)
    if held:
        calib = calibrate_on_demos(reward, held, patience=patience, tolerance=tolerance)
        out["calibration"] = calib
        out["stg_mae_steps"] = calib["stg_mae_steps"]
    if threshold is None:
        threshold = out.get("calibration", {}).get("threshold_s", reward_meta.get("threshold_s"))
    if threshold is None:
        searched = data or reward_meta.get("dataset")
        raise EvaluationRefused(
            f"no detector threshold for {reward_path}: the checkpoint stores none and no held-out "
            f"demonstrations were found ({f'none in {searched}' if searched else 'it names no dataset'}); "
            "pass a threshold (threshold=S, CLI: --threshold S) or a dataset with its held-out "
            "demonstrations to calibrate one (data=DATASET, CLI: --data DATASET)")
    backend, env_config = resolve_task(meta["backend"], meta["env_config"], backend, env_config)
    out.update({"backend": backend, "env_config": env_config})
    bar = tqdm(total=episodes, desc="eval", disable=not progress)
    report, records = evaluate_policy(policy, backend, env_config, episodes, threshold,
                                      patience=patience, tolerance=tolerance, seed0=seed0, n_envs=n_envs,
                                      reward_model=None if reward is policy else reward,
                                      progress=lambda rec: bar.update(1))
    bar.close()
    out.update(report.to_dict())
    if outcomes is not None:
        outcomes[:] = [int(bool(r.success)) for r in records]
    return out

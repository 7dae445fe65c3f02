"""The detector practice runs with: the threshold s from the reward model's calibration on
held-out demonstrations, and the pre-practice check of that detector on rollouts of the
starting policy (with s re-calibrated on half of them), which refuses practice when the
detector is too poor to reward it. The rule itself is ``core.method.detector``."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import torch

from core.learning.fleets import Fleet
from core.learning.policy import DojoPolicy
from core.learning.practice.config import PracticeConfig, PracticeRefused
from core.learning.practice.evaluation import interrupt_control
from core.learning.rollout import RolloutHooks, run_episodes
from core.method.detector import (DEFAULT_TOLERANCE, WIDE_CANDIDATES, DetectorCounts, DetectorSpec,
                                  calibrate_threshold, score_episode)
from core.method.seeds import CHECK_SEED0
from core.method.stats import precision_recall_f1


def demo_threshold(reward_path: str, reward_meta: dict[str, Any], patience: int, reward: DojoPolicy | None = None) -> float:
    """s from the reward model's demonstrations: its recorded calibration if made with this
    patience, else calibrated now on its held-out demonstrations. Practice and the worker's
    practice job both take s from here when none is given."""
    if reward_meta.get("threshold_s") is not None and int(reward_meta.get("patience", 1)) == patience:
        return float(reward_meta["threshold_s"])
    from core.learning.checkpoint import load_checkpoint
    from core.learning.dataset import held_out_episodes
    from core.learning.evaluate import calibrate_on_demos

    held = held_out_episodes(reward_meta)
    if not held:
        raise PracticeRefused(f"{reward_path} carries no detector threshold and no held-out demonstrations to "
                              "calibrate one; pass threshold_s (--threshold, or the job's threshold_s param) or set "
                              "the task's detector threshold")
    if reward is None:
        reward, _ = load_checkpoint(reward_path, "cpu")
    return float(calibrate_on_demos(reward, held, patience)["threshold_s"])


def detector_check(policy: DojoPolicy, reward: DojoPolicy, fleet: Fleet, spec: DetectorSpec,
                   n: int, seed: int, tolerance: int = DEFAULT_TOLERANCE, calibrate: bool = False,
                   beta: float = 1.0, baseline: DojoPolicy | None = None,
                   interrupt: Callable[[], None] | None = None, groups: int | None = None) -> dict[str, Any]:
    """Precision/recall of the detector against ground truth on ``n`` held-out rollouts of
    the starting policy (sampling, as in practice), each run to the step limit so that
    every (s, patience) can be scored on the same frames.

    ``calibrate``: pick s (max F-beta for this patience, ``beta`` = 1: F1) on the first half of the rollouts and
    report precision/recall on the second half, so the figures are not fitted to the
    episodes they are measured on. The demonstration-calibrated s only sees demo endings;
    the policy's own failure states are what fool a detector (docs/method.md, "Calibration").

    ``baseline``: another reward model (the unrefined one) scored the same way on the same
    rollouts, reported under "before"."""
    gen = torch.Generator().manual_seed(seed + 17)
    recs = run_episodes(policy, None, list(range(CHECK_SEED0, CHECK_SEED0 + n)), fleet=fleet, greedy=False,
                        reward_model=reward, stop_on_ground_truth=False, detector=None, generator=gen,
                        keep_frames=baseline is not None, hooks=RolloutHooks(control=interrupt_control(interrupt)),
                        groups=groups)
    recs = [r for r in recs if not r.error]
    # A refined model (``baseline`` given) may read the goal at d ~ 8-15: try s up to 20 for it.
    out = score_check([(r.d, r.gt) for r in recs], spec, tolerance, calibrate, beta,
                      wide=baseline is not None)
    if baseline is not None:
        from core.learning.refine import episode_d, from_record

        ds = episode_d(baseline, [from_record(r) for r in recs])
        out["before"] = score_check([(list(d), r.gt) for d, r in zip(ds, recs)], spec, tolerance, calibrate, beta)
    return out


def score_check(pairs: list[tuple[list[float], list[bool]]], spec: DetectorSpec, tolerance: int,
                calibrate: bool, beta: float, wide: bool = False) -> dict[str, Any]:
    held = pairs
    s_used, source = spec.threshold_s, "given"
    if calibrate and len(pairs) >= 4:
        fit, held = pairs[: len(pairs) // 2], pairs[len(pairs) // 2:]
        # ``wide``: up to 20 steps, for a refined reward model, which can read the goal at
        # d ~ 8-15 (its failure frames were pushed far above); else the usual 0.25-8.
        s_used, _ = calibrate_threshold(fit, candidates=WIDE_CANDIDATES if wide else None,
                                          patience=spec.patience, tolerance=tolerance, beta=beta, tie="middle")
        source = f"calibrated on {len(fit)} rollouts" + (f" (max F{beta:g})" if beta != 1.0 else " (max F1)")
    counts = DetectorCounts()
    for d, gt in held:
        counts = counts + score_episode(d, gt, s_used, spec.patience, tolerance)
    p, rc, f1 = precision_recall_f1(counts)
    return {"episodes": len(held), "precision": p, "recall": rc, "f1": f1,
            "counts": dataclasses.asdict(counts), "threshold_s": float(s_used), "threshold_source": source,
            "patience": spec.patience, "tolerance": tolerance, "calibration_beta": beta if calibrate else None,
            "true_success_rate": float(np.mean([any(gt) for _, gt in pairs])) if pairs else 0.0}


def checked_detector(cfg: PracticeConfig, files, spec: DetectorSpec, run_check: Callable[[], dict[str, Any]],
                     log: Callable[..., None]) -> tuple[DetectorSpec, dict[str, Any] | None]:
    """The detector practice starts with, and the check's figures (None without a check): runs
    the check once (``run_check``; its figures are kept in the run directory, so a resumed run
    does not check again), then takes its s (``check_refusal`` says whether it passed)."""
    if cfg.check_episodes and files.read_check() is None:
        chk = run_check()
        chk["passed"] = chk["precision"] >= cfg.min_precision and chk["recall"] >= cfg.min_recall
        files.write_check(chk)
        log(f"detector check: precision {chk['precision']:.2f} recall {chk['recall']:.2f} "
            f"(s={chk['threshold_s']:.2f} {chk['threshold_source']}, patience {spec.patience}, "
            f"{chk['episodes']} rollouts scored)")
        if "before" in chk:
            log(f"  before the refinement: precision {chk['before']['precision']:.2f} "
                f"recall {chk['before']['recall']:.2f} (s={chk['before']['threshold_s']:.2f})")
    chk = files.read_check()
    if chk is None:
        return spec, None
    spec = DetectorSpec(float(chk["threshold_s"]), spec.patience)
    passed = chk["precision"] >= cfg.min_precision and chk["recall"] >= cfg.min_recall
    if passed != chk.get("passed"):  # judged against this start's bars (relaxed after a refusal)
        chk["passed"] = passed
        files.write_check(chk)
    return spec, chk


def check_refusal(cfg: PracticeConfig, chk: dict[str, Any] | None, spec: DetectorSpec, where: Any) -> str | None:
    """Why practice must not start with this detector (its check failed the bars), or None."""
    if chk is None or chk.get("passed", True):
        return None
    return (f"practice refused: the success detector scored precision {chk['precision']:.2f} / "
            f"recall {chk['recall']:.2f} against ground truth on {chk['episodes']} held-out rollouts "
            f"(bar: {cfg.min_precision:.2f} / {cfg.min_recall:.2f}; s = {spec.threshold_s:.2f}, "
            f"patience {spec.patience}). What would help: more demonstrations for Stage 1, a larger "
            f"s with more patience (--patience), or a better image encoder. Figures: {where}")

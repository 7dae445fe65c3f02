"""Re-train the reward model's steps-to-go head on the episodes people judged (a reviewer's
label on the Review page, else a supervisor's override on Live), read back from the database.

docs/method.md ("Human verdicts") keeps overrides and labels "as data (it can later re-train or re-calibrate the
steps-to-go head, which the paper names as the fix for an unreliable detector on failure
states)". The Training page re-calibrates s from them (storage.metrics.threshold_sweep);
this module re-trains the head, which is what helps when no s separates the near-misses from
the successes. It is the real-robot counterpart of practice's ``refine_every`` (which labels
simulated episodes by ground truth while they are still in memory): here the frames come back
from the ``frames`` table (JPEG, as the worker stored them) and the proprioception from
``steps.proprio``, so any finished, judged episode of any session can be used later.

Labels: a judged success ends at its last frame (the person saw the goal there: the same
convention as a verdict in practice); a judged failure gives every frame the censored bound
of core.learning.refine, on the last 10 frames of a failure only, with d kept where it was on the
earlier ones (``fail_tail``, ``anchor``: re-training every frame of a failure made d a
noisier progress reward, docs/experiments). Every third judged episode (from 12 on) is held out: on its first half each
model (old, refined) gets its best s, on the second half both are scored; the refined model's
s (its d has a new scale) goes into the checkpoint's meta, so a practice job using it reads it.
"""
from __future__ import annotations

import copy
import io
import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from core.learning.refine import LabeledEpisode

MIN_LABELS = 10
"""Judged, usable episodes below which the job refuses (and says how many more to label)."""


class RefineFromLabelsError(ValueError):
    """The job cannot run as asked; the message names the problem and the fix."""


def _decode(data: bytes, size: Optional[int]) -> np.ndarray:
    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("RGB")
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, np.uint8)


def load_episodes(s, episodes, *, truth: Callable[[Any], Optional[bool]], image_size: Optional[int] = None,
                  proprio_dim: Optional[int] = None) -> tuple[list[LabeledEpisode], list[int], dict[str, int]]:
    """``episodes`` (Episode rows) as labeled episodes with ``truth(row)`` as the label (None:
    left out), their ids, and how many were skipped and why (no stored frame for every step,
    no proprioception: written before it was stored, a frame that cannot be decoded)."""
    from sqlalchemy import select

    from storage.models import Frame, Step

    out: list[LabeledEpisode] = []
    ids: list[int] = []
    skipped: dict[str, int] = {}

    def skip(why: str) -> None:
        skipped[why] = skipped.get(why, 0) + 1

    for ep in episodes:
        label = truth(ep)
        if label is None:
            skip("no label")
            continue
        steps = list(s.execute(select(Step.t, Step.proprio).where(Step.episode_id == ep.id).order_by(Step.t)))
        if not steps:
            skip("no steps stored")
            continue
        if any(p is None for _, p in steps) or (proprio_dim is not None and any(len(p) != proprio_dim
                                                                                for _, p in steps)):
            skip("no proprioception stored (episodes written before Dojo stored it)")
            continue
        frames = dict(s.execute(select(Frame.t, Frame.data).where(Frame.episode_id == ep.id)).all())
        if any(t not in frames for t, _ in steps):
            skip("frames stored for some steps only (frame_every > 1)")
            continue
        try:
            imgs = np.stack([_decode(frames[t], image_size) for t, _ in steps])
        except (OSError, ValueError):
            skip("a stored frame cannot be decoded")
            continue
        out.append(LabeledEpisode(imgs, np.asarray([p for _, p in steps], np.float32), ep.instruction or "",
                                  bool(label), None, int(ep.seed or 0)))
        ids.append(ep.id)
    return out, ids, skipped


def judged_episodes(s, *, task_id: int, session_id: Optional[int], image_size: Optional[int] = None,
                    proprio_dim: Optional[int] = None) -> tuple[list[LabeledEpisode], list[int], dict[str, int]]:
    """The finished episodes of one session that a person judged (label, else override), as
    labeled episodes, oldest first (see load_episodes)."""
    from sqlalchemy import select

    from storage.metrics import human_truth
    from storage.models import Episode

    q = select(Episode).where(Episode.task_id == task_id, Episode.status == "finished",
                              (Episode.label_success.is_not(None)) | (Episode.override_success.is_not(None)))
    q = q.where(Episode.session_id == session_id if session_id is not None else Episode.session_id.is_(None))
    return load_episodes(s, list(s.scalars(q.order_by(Episode.id))), truth=human_truth, image_size=image_size,
                         proprio_dim=proprio_dim)


def session_detector(s, session_id: int) -> tuple[Optional[float], Optional[int]]:
    """The detector (s, patience) a session's newest finished episode ran with (its row and
    ``meta.patience``, as the worker writes them); (None, None) without one."""
    from sqlalchemy import select

    from storage.models import Episode

    ep = s.scalars(select(Episode).where(Episode.session_id == session_id, Episode.status == "finished",
                                         Episode.detector_threshold.is_not(None))
                   .order_by(Episode.id.desc()).limit(1)).first()
    if ep is None:
        return None, None
    pat = (ep.meta or {}).get("patience")
    return float(ep.detector_threshold), (int(pat) if pat is not None else None)


def score_detector(model, held: list[LabeledEpisode], threshold_s: float, patience: int, tolerance: int,
                   beta: float, wide: bool) -> dict[str, Any]:
    """s calibrated on the first half of ``held`` (F-beta), precision/recall on the second."""
    from core.learning.practice.checks import score_check
    from core.learning.refine import episode_d
    from core.method.detector import DetectorSpec

    pairs = [(list(map(float, d)), [e.success and t == len(d) - 1 for t in range(len(d))])
             for d, e in zip(episode_d(model, held), held)]
    return score_check(pairs, DetectorSpec(threshold_s, patience), tolerance, True, beta, wide=wide)


def refine_from_labels(s_factory: Callable[[], Any], *, task_id: int, session_id: Optional[int],
                       reward_checkpoint: str, out: str | Path, steps: int = 300, lr: float = 1e-4,
                       seed: int = 0, threshold_s: Optional[float] = None, patience: int = 1,
                       tolerance: int = 3, beta: float = 0.5, min_labels: int = MIN_LABELS,
                       fail_tail: Optional[int] = 10, anchor: float = 1.0,
                       interrupt: Callable[[], None] | None = None,
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    """Refine ``reward_checkpoint`` on the judged episodes of ``session_id`` and write
    ``<out>/reward_from_labels.pt`` (its meta: the labels used, the held-out figures before
    and after, the re-calibrated ``threshold_s``) and ``<out>/relabel.json``. ``s_factory``
    opens a read session (``Database.read``). ``threshold_s``: the s the episodes were judged
    against (default: the reward model's own calibration), which sets the failure floor.
    Raises RefineFromLabelsError (no change on disk) with too few usable labels."""
    from core.files import atomic_write_bytes
    from core.learning.checkpoint import load_checkpoint, save_checkpoint
    from core.learning.practice.refinement import reward_demos
    from core.learning.refine import RefineConfig, refine_reward

    t0 = time.perf_counter()
    model, reward_meta = load_checkpoint(reward_checkpoint, "cpu")
    mc = model.config
    with s_factory() as s:
        labeled, ids, skipped = judged_episodes(s, task_id=task_id, session_id=session_id,
                                                image_size=mc.image_size, proprio_dim=mc.proprio_dim)
    why = "; ".join(f"{n} skipped: {k}" for k, n in skipped.items())
    if len(labeled) < min_labels:
        raise RefineFromLabelsError(
            f"session {session_id}: {len(labeled)} judged episodes can be used ({why or 'none skipped'}); re-training "
            f"the steps-to-go head needs at least {min_labels}. Label more on the Review page (or override the "
            "detector on Live) for this session, then run it again")
    n_ok = sum(e.success for e in labeled)
    if n_ok == 0 or n_ok == len(labeled):
        raise RefineFromLabelsError(f"session {session_id}: all {len(labeled)} judged episodes are "
                           f"{'successes' if n_ok else 'failures'}; the head needs both to learn where the goal is. "
                           "Label some of the other kind on the Review page")
    s_old = float(threshold_s if threshold_s is not None else reward_meta.get("threshold_s") or 1.0)
    held = labeled[::3] if len(labeled) >= 12 else []
    fit = [e for i, e in enumerate(labeled) if i % 3] if held else labeled
    # Both models get their best s on the same first half of the held-out episodes and are
    # scored on the same second half (the refined one may read the goal at a larger d).
    before = score_detector(model, held, s_old, patience, tolerance, beta, wide=False) if held else None
    refined = copy.deepcopy(model)
    import torch

    torch.manual_seed(seed)  # dropout: the same labels and seed give the same model
    stats = refine_reward(refined, fit, s_old, RefineConfig(steps=steps, lr=lr, seed=seed, fail_tail=fail_tail,
                                                                         anchor=anchor),
                          demos=reward_demos(reward_meta, log), interrupt=interrupt)
    refined.eval().requires_grad_(False)
    after = score_detector(refined, held, s_old, patience, tolerance, beta, wide=True) if held else None
    new_s = float(after["threshold_s"]) if after is not None else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"reward_checkpoint": str(out / "reward_from_labels.pt"), "refined_from": str(reward_checkpoint),
               "task_id": task_id, "session_id": session_id, "labels": len(labeled), "labels_success": n_ok,
               "episode_ids": ids, "fit": len(fit), "held_out": len(held), "skipped": skipped,
               "threshold_before": s_old, "threshold_s": new_s, "patience": patience, "tolerance": tolerance,
               "fail_tail": fail_tail, "anchor": anchor,
               "check_before": before, "check_after": after, "refine": stats,
               "seconds": round(time.perf_counter() - t0, 1)}
    meta = {**reward_meta, "stage": "reward_refined", "refined_from": str(reward_checkpoint), "relabel": summary}
    if new_s is not None:
        meta.update(threshold_s=new_s, patience=patience)
    else:  # no held-out episodes: the old s is on the old scale; practice re-calibrates
        meta.pop("threshold_s", None)
    save_checkpoint(out / "reward_from_labels.pt", refined, meta)
    atomic_write_bytes(out / "relabel.json", json.dumps(summary, indent=2, default=float).encode())
    log(f"steps-to-go head re-trained on {len(fit)} judged episodes ({n_ok} successes in all) in "
        f"{summary['seconds']:.0f} s" + (f"; held out {len(held)}: precision {before['precision']:.2f} -> "
                                          f"{after['precision']:.2f}, recall {before['recall']:.2f} -> "
                                          f"{after['recall']:.2f} (s {before['threshold_s']:g} -> {new_s:g})" if held else ""))
    return summary


__all__ = ["MIN_LABELS", "RefineFromLabelsError", "judged_episodes", "load_episodes", "refine_from_labels", "score_detector",
           "session_detector"]

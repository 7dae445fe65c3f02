"""Refine the frozen reward model on labeled rollouts (the paper's fix for a detector
that is wrong on failure states never seen in demonstrations).

Stage 1 teaches steps-to-go from demonstrations only, and every demonstration ends in
success: the head has never seen a state from which the goal was *not* reached, so a
near-miss (the gripper hovering just short of the button, the block parked beside its
target) can read d ~ 0 and fire the detector. docs/method.md ("Human verdicts") keeps overrides and review labels
as data that "can later re-train or re-calibrate the steps-to-go head". This module does
that with one loss for both kinds of labeled episode:

- **success** (reached the goal at frame g): the ordinary label, steps-to-go = g - t for
  frames t <= g (later frames are dropped);
- **failure** (never reached it by its last frame T): the true steps-to-go is unknown but
  *censored*: the goal was not reached in the T - t steps that followed frame t, so
  steps-to-go > T - t, and a frame of a failed episode is not a success frame, so it is at
  least ``fail_floor`` (a few steps above the detector threshold s). The loss is the
  negative log of the probability the head puts on those bins, -log P(k >= bound): the
  survival-analysis likelihood of a right-censored label. It pushes d up where the head
  was wrong and costs nothing where it already agreed.

Each gradient step mixes a minibatch of labeled rollout frames with one of the
demonstrations (the Stage-1 steps-to-go loss), so the head keeps what it knew. The image
pathway stays frozen by default, like the reward model's use in Stage 2.

In simulation the labels come from the simulator's ground truth on rollouts of the
starting policy (standing in for a reviewer: one label per episode, counted and reported
as labels used); on real robots they come from the review queue.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from core.method import steps_to_go
from core.learning.stg_targets import soft_stg_targets
from core.learning.dataset import Episode, FrameTable
from core.learning.policy import STG, DojoPolicy


@dataclass
class LabeledEpisode:
    """One rollout with a success/failure label. ``frames`` [T+1, H, W, 3] uint8,
    ``proprio`` [T+1, P]; ``goal_index``: the frame where success was first reached
    (``success`` only; None = the last frame)."""

    frames: np.ndarray
    proprio: np.ndarray
    instruction: str
    success: bool
    goal_index: int | None = None
    seed: int = 0


def from_record(rec) -> LabeledEpisode:
    """A rollout (``core.learning.rollout.EpisodeRecord`` kept with frames) labeled by the
    simulator's ground truth: success at the first frame where it held."""
    if not rec.frames:
        raise ValueError(f"episode seed {rec.seed} kept no frames; roll out with keep_frames=True")
    gt = list(rec.gt[: len(rec.frames)])
    goal = next((t for t, g in enumerate(gt) if g), None)
    return LabeledEpisode(np.stack(rec.frames), np.stack(rec.proprio).astype(np.float32), rec.instruction,
                          goal is not None, goal, rec.seed)


def default_fail_floor(threshold_s: float) -> int:
    """The smallest steps-to-go a frame of a failed episode is pushed to: twice s, at least
    s + 2, so that the detector's d <= s sits well clear of it."""
    return int(max(math.ceil(2 * threshold_s), math.ceil(threshold_s) + 2))


def rollout_targets(n_frames: int, success: bool, goal_index: int | None, fail_floor: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (label, censored) for one labeled episode of ``n_frames`` frames.

    Success: frames 0..g get the exact label g - t (``censored`` False); frames after g
    are not returned. Failure: every frame t of 0..T gets the lower bound
    max(T - t + 1, fail_floor) with ``censored`` True.
    """
    if n_frames < 1:
        raise ValueError(f"an episode needs at least one frame, got {n_frames}")
    if success:
        g = n_frames - 1 if goal_index is None else int(goal_index)
        if not 0 <= g < n_frames:
            raise ValueError(f"goal_index {g} is outside the episode's {n_frames} frames")
        return (g - np.arange(g + 1)).astype(np.int64), np.zeros(g + 1, bool)
    t = np.arange(n_frames)
    return np.maximum(n_frames - t, fail_floor).astype(np.int64), np.ones(n_frames, bool)


def censored_stg_nll(stg_logits: torch.Tensor, lower: torch.Tensor, cap: int, bin_width: int) -> torch.Tensor:
    """-log P(steps-to-go >= lower) per row [B]: the mass on bins from bin(lower) up
    (a bound above the cap means the last bin)."""
    logp = F.log_softmax(stg_logits.float(), -1)
    first = steps_to_go.stg_to_bin(lower.clamp(min=0), cap, bin_width).to(logp.device)
    k = torch.arange(logp.shape[-1], device=logp.device)
    masked = logp.masked_fill(k.unsqueeze(0) < first.unsqueeze(1), float("-inf"))
    return -torch.logsumexp(masked, -1)


def labeled_stg_loss(stg_logits: torch.Tensor, labels: torch.Tensor, censored: torch.Tensor, cap: int,
                     bin_width: int, sigma: float = 0.0) -> torch.Tensor:
    """Mean over rows of the Stage-1 cross-entropy (exact labels) or the censored NLL."""
    labels = labels.to(stg_logits.device)
    censored = censored.to(stg_logits.device)
    out = torch.zeros(len(labels), device=stg_logits.device)
    exact = ~censored
    if exact.any():
        tgt = soft_stg_targets(labels[exact], cap, bin_width, sigma)
        out[exact] = -(tgt * F.log_softmax(stg_logits[exact].float(), -1)).sum(-1)
    if censored.any():
        out[censored] = censored_stg_nll(stg_logits[censored], labels[censored], cap, bin_width)
    return out.mean()


def _table(episodes: Sequence[LabeledEpisode], fail_floor: int, fail_tail: int | None = None
           ) -> tuple[FrameTable, np.ndarray, np.ndarray]:
    """A FrameTable of the labeled frames (success episodes cut at their goal), its
    ``censored`` flags, and the rows a step may sample: all, except that with ``fail_tail``
    = K only the last K frames of a failed episode are trained on (the earlier ones stay in
    the table as the previous frame of the next); the table's STG column holds the label or
    the lower bound."""
    eps, labels, cens, keep = [], [], [], []
    for e in episodes:
        lab, c = rollout_targets(len(e.frames), e.success, e.goal_index, fail_floor)
        n = len(lab)
        eps.append(Episode(e.frames[:n], e.proprio[:n], np.zeros((max(0, n - 1), 1), np.float32),
                           e.instruction, e.seed, e.success))
        labels.append(lab)
        cens.append(c)
        k = np.ones(n, bool)
        if not e.success and fail_tail is not None:
            k[: max(0, n - int(fail_tail))] = False
        keep.append(k)
    table = FrameTable.from_episodes(eps)
    table.stg = np.concatenate(labels)
    return table, np.concatenate(cens), np.concatenate(keep)


@torch.no_grad()
def episode_d(model: DojoPolicy, episodes: Sequence[LabeledEpisode], batch_size: int = 256) -> list[np.ndarray]:
    """d(o_t, g) of every frame of each episode (all frames, not cut at the goal)."""
    was_training = model.training
    model.eval()
    eps = [Episode(e.frames, e.proprio, np.zeros((len(e.frames) - 1, 1), np.float32), e.instruction, e.seed,
                   e.success) for e in episodes]
    table = FrameTable.from_episodes(eps)
    out = np.zeros(len(table), np.float32)
    for start in range(0, len(table), batch_size):
        idx = np.arange(start, min(start + batch_size, len(table)))
        out[idx] = model.steps_to_go(table.batch(idx, model.config.n_frames, 2)).cpu().numpy()
    model.train(was_training)
    return [out[table.episode_id == k] for k in range(len(episodes))]


def separation(model: DojoPolicy, episodes: Sequence[LabeledEpisode]) -> dict[str, float]:
    """How well d tells the goal apart: mean d at success episodes' goal frames, and the
    mean and 5th percentile of the minimum d over each failed episode (what fires a
    false positive)."""
    ds = episode_d(model, episodes)
    goal = [float(d[e.goal_index if e.goal_index is not None else len(d) - 1])
            for d, e in zip(ds, episodes) if e.success]
    fail_min = [float(d.min()) for d, e in zip(ds, episodes) if not e.success]
    return {"d_goal_mean": float(np.mean(goal)) if goal else float("nan"),
            "d_fail_min_mean": float(np.mean(fail_min)) if fail_min else float("nan"),
            "d_fail_min_p05": float(np.percentile(fail_min, 5)) if fail_min else float("nan"),
            "success_episodes": len(goal), "failed_episodes": len(fail_min)}


@dataclass(frozen=True)
class RefineConfig:
    """Settings of a reward-model refinement."""

    steps: int = 300
    """Gradient steps."""
    batch_size: int = 64
    """Labeled rollout frames per step (and as many demonstration frames, if any)."""
    lr: float = 1e-4
    """AdamW learning rate (constant)."""
    weight_decay: float = 0.01
    fail_floor: int | None = None
    """Lower bound on steps-to-go for frames of failed episodes; default from s (``default_fail_floor``)."""
    train_vision: bool = False
    """Also train the image pathway (frozen by default, as in Stage 2)."""
    anchor: float = 0.0
    """With ``fail_tail``: weight of a term that keeps the steps-to-go distribution on the
    earlier frames of failed episodes (not trained on) where the model had it (cross-entropy
    to the model's own predictions before the refinement), so the progress reward there
    does not drift. 0 = off."""
    fail_tail: int | None = None
    """Train on the last K frames of a failed episode only (where a near-miss fires the
    detector); None = every frame. Bounding every frame of a failure also lifts d on the
    mid-episode frames that successes share, which made the progress reward noisier (docs/experiments)."""
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def refine_reward(model: DojoPolicy, labeled: Sequence[LabeledEpisode], threshold_s: float,
                  cfg: RefineConfig = RefineConfig(), demos: Sequence[Episode] = (),
                  interrupt: Callable[[], None] | None = None) -> dict[str, Any]:
    """Fine-tune ``model``'s steps-to-go pathway in place on ``labeled`` rollouts (plus
    ``demos``, the Stage-1 loss, in every step). Returns what was done and the separation
    before/after on the labeled episodes themselves (training figures: measure precision
    on fresh rollouts, as practice's detector check does). ``interrupt()``, called before
    every step, may raise to abandon it (a worker asked to stop)."""
    if not labeled:
        raise ValueError("refining the reward model needs at least one labeled episode")
    n_ok = sum(e.success for e in labeled)
    floor = cfg.fail_floor if cfg.fail_floor is not None else default_fail_floor(threshold_s)
    mc = model.config
    before = separation(model, labeled)
    table, cens, keep = _table(labeled, floor, cfg.fail_tail)
    pool = np.flatnonzero(keep)
    anchor_rows = np.flatnonzero(~keep) if cfg.anchor > 0 else np.zeros(0, np.int64)
    anchor_probs = None
    if len(anchor_rows):
        model.eval()
        with torch.no_grad():
            anchor_probs = torch.cat([F.softmax(model.predict(table.batch(anchor_rows[i:i + 256], mc.n_frames,
                                                                          mc.action_bins))[1].float(), -1)
                                      for i in range(0, len(anchor_rows), 256)])
    demo_table = FrameTable.from_episodes(list(demos)) if demos else None
    frozen = [] if cfg.train_vision else model.vision_modules()
    grads = {p: p.requires_grad for p in model.parameters()}
    model.requires_grad_(True)
    for m in frozen:
        m.requires_grad_(False)
    if mc.freeze_image_encoder and hasattr(model.image_encoder, "backbone_parameters"):
        for p in model.image_encoder.backbone_parameters():
            p.requires_grad_(False)
    model.action_head.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    model.train()
    losses = []
    try:
        for _ in range(cfg.steps):
            if interrupt is not None:
                interrupt()
            idx = pool[rng.integers(0, len(pool), cfg.batch_size)]
            b = table.batch(idx, mc.n_frames, mc.action_bins)
            _, logits = model.predict(b)
            loss = labeled_stg_loss(logits, b[STG], torch.from_numpy(cens[idx]), mc.stg_cap, mc.stg_bin_width,
                                    mc.stg_label_sigma)
            if demo_table is not None:
                di = rng.integers(0, len(demo_table), cfg.batch_size)
                db = demo_table.batch(di, mc.n_frames, mc.action_bins)
                _, dl = model.predict(db)
                tgt = soft_stg_targets(db[STG].to(dl.device), mc.stg_cap, mc.stg_bin_width, mc.stg_label_sigma)
                loss = 0.5 * loss + 0.5 * -(tgt * F.log_softmax(dl.float(), -1)).sum(-1).mean()
            if anchor_probs is not None:
                ai = rng.integers(0, len(anchor_rows), cfg.batch_size)
                _, al = model.predict(table.batch(anchor_rows[ai], mc.n_frames, mc.action_bins))
                loss = loss + cfg.anchor * -(anchor_probs[ai].to(al.device) * F.log_softmax(al.float(), -1)).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(loss.item())
    finally:
        model.eval()
        for p, g in grads.items():
            p.requires_grad_(g)
    after = separation(model, labeled)
    return {"labeled_episodes": len(labeled), "labeled_success": n_ok, "labeled_failure": len(labeled) - n_ok,
            "demo_episodes": len(demos), "fail_floor": floor, "fail_tail": cfg.fail_tail, "anchor": cfg.anchor, "steps": cfg.steps,
            "lr": cfg.lr,
            "loss_first": float(np.mean(losses[:20])), "loss_last": float(np.mean(losses[-20:])),
            "before": before, "after": after}

"""One iteration's learning: each episode's rewards and returns, the (o, a, g, R) tuples of
the buffer, and the REINFORCE update (docs/method.md, "Stage 2 practice"), optionally
anchored to the demonstrations (``bc_weight``)."""
from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from core.learning.action_bins import action_to_bins
from core.learning.policy import ACTION_BINS, FEATURES, FRAMES, INSTRUCTION, PROPRIO, DojoPolicy
from core.learning.practice.config import PracticeConfig, PracticeRefused
from core.learning.rollout import END_DETECTOR, EpisodeRecord
from core.method import rewards as rewards_math
from core.method.detector import DEFAULT_TOLERANCE, false_positive

Tuple = tuple  # (frames [cur, prev], proprio [cur, prev], instruction, action, R_t, features or None)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """``torch.set_num_threads(n)`` inside the block, the previous count after it (None: no change)."""
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def episode_rewards(rec: EpisodeRecord, ground_truth_reward: bool) -> np.ndarray:
    """r_t for every action of a practice episode: the progress reward d_t - d_{t+1} of the
    frozen reward model, or the oracle ablation's ground-truth reward."""
    if ground_truth_reward:
        return rewards_math.ground_truth_rewards(rec.gt, rec.length)
    return rewards_math.progress_rewards(rec.d[: rec.length + 1])


def episode_tuples(rec: EpisodeRecord, returns: np.ndarray) -> list[Tuple]:
    """(frames [cur, prev], proprio [cur, prev], instruction, action, R_t, features [cur, prev] or
    None) for every step; the features are the rollout's frozen-backbone ones when it kept them."""
    feats = rec.features if len(rec.features) == len(rec.frames) else None
    out = []
    for t in range(rec.length):
        p = max(0, t - 1)
        out.append((np.stack([rec.frames[t], rec.frames[p]]), np.stack([rec.proprio[t], rec.proprio[p]]),
                    rec.instruction, rec.actions[t], float(returns[t]),
                    None if feats is None else torch.stack([feats[t], feats[p]])))
    return out


def tuples_batch(rows: list[Tuple], n_frames: int, action_bins: int) -> dict[str, Any]:
    frames = np.stack([r[0] for r in rows])[:, :n_frames]
    prop = np.stack([r[1] for r in rows])[:, :n_frames]
    batch = {FRAMES: torch.from_numpy(frames), PROPRIO: torch.from_numpy(prop.astype(np.float32)),
             INSTRUCTION: [r[2] for r in rows],
             ACTION_BINS: torch.from_numpy(action_to_bins(np.stack([r[3] for r in rows]), action_bins))}
    if all(len(r) > 5 and r[5] is not None for r in rows):  # the frozen backbone's, from the rollout
        batch[FEATURES] = torch.stack([r[5] for r in rows])[:, :n_frames]
    return batch


def reinforce_loss(log_probs: torch.Tensor, returns, c: float = 0.05) -> torch.Tensor:
    """On-policy REINFORCE without a baseline: mean of -c * R_t * log pi(a_t|o_t,g).

    ``log_probs`` [B] (differentiable), ``returns`` [B] (constants)."""
    r = torch.as_tensor(returns, dtype=log_probs.dtype, device=log_probs.device)
    if r.shape != log_probs.shape:
        raise ValueError(f"returns {tuple(r.shape)} and log_probs {tuple(log_probs.shape)} must match")
    return -(c * r.detach() * log_probs).mean()


def anchor_demos(policy_meta: dict[str, Any]):
    """The policy's Stage-1 training demonstrations as a FrameTable and the rows that carry
    an action (``bc_weight``); held-out episodes are left out. Raises PracticeRefused when
    they cannot be read, naming the dataset and the fix."""
    from core.learning.dataset import FrameTable, held_out_episodes, held_out_key, load_datasets

    data = policy_meta.get("dataset")
    if not data:
        raise PracticeRefused("bc_weight needs the policy's demonstrations, but its checkpoint names no dataset; "
                              "set bc_weight 0 or start from a Stage-1 checkpoint trained by Dojo")
    try:
        _, eps = load_datasets(data)
        held = {tuple(held_out_key(e)) for e in held_out_episodes(policy_meta)}
    except (OSError, ValueError) as e:
        raise PracticeRefused(f"bc_weight needs the policy's demonstrations, and {data} cannot be read ({e}); "
                              "restore that dataset or set bc_weight 0") from e
    train = [e for e in eps if tuple(held_out_key(e)) not in held]
    if not train:
        raise PracticeRefused(f"bc_weight: {data} holds no training demonstrations; set bc_weight 0")
    table = FrameTable.from_episodes(train)
    return table, np.flatnonzero(table.action_mask)


def update_policy(policy: DojoPolicy, opt: torch.optim.Optimizer, params: list, buffer: list[Tuple],
                  cfg: PracticeConfig, rng: np.random.Generator, anchor=None) -> dict[str, Any]:
    """``tuples_per_iteration / minibatch`` gradient steps on tuples drawn from ``buffer``
    without replacement; returns the metrics row's loss fields."""
    n_frames, bins = policy.config.n_frames, policy.config.action_bins
    order = rng.permutation(len(buffer))[: cfg.tuples_per_iteration]
    base = rewards_math.batch_baseline([buffer[j][4] for j in order], cfg.baseline)
    policy.train(cfg.update_dropout)
    for m in policy.vision_modules() if cfg.freeze_vision else []:
        m.eval()
    losses, bc_losses = [], []
    for k in range(0, len(order) - cfg.minibatch + 1, cfg.minibatch):
        rows = [buffer[j] for j in order[k:k + cfg.minibatch]]
        logp = policy.action_log_prob(tuples_batch(rows, n_frames, bins))
        loss = reinforce_loss(logp, torch.tensor([r[4] - base for r in rows]), cfg.c)
        if anchor is not None:
            table, acted = anchor
            demo = table.batch(acted[rng.integers(0, len(acted), cfg.minibatch)], n_frames, bins)
            bc = -policy.action_log_prob(demo).mean() / policy.config.action_dim
            loss = loss + cfg.bc_weight * bc
            bc_losses.append(bc.item())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
    out = {"loss": float(np.mean(losses)) if losses else 0.0, "baseline": base}
    if bc_losses:
        out["bc_loss"] = float(np.mean(bc_losses))
    return out


def episode_stats(recs: list[EpisodeRecord], ep_returns: list[float]) -> dict[str, Any]:
    fired = [r.end_reason == END_DETECTOR for r in recs]
    fp = sum(f and false_positive(r.detector_step, r.gt, DEFAULT_TOLERANCE) for f, r in zip(fired, recs))
    fn = sum((not f) and r.success for f, r in zip(fired, recs))
    return {"episodes": len(recs), "mean_return": float(np.mean(ep_returns)) if ep_returns else 0.0,
            "mean_length": float(np.mean([r.length for r in recs])) if recs else 0.0,
            "detector_fires": int(sum(fired)), "detector_false_positives": int(fp),
            "detector_false_negatives": int(fn),
            "ground_truth_success": float(np.mean([r.success for r in recs])) if recs else 0.0}

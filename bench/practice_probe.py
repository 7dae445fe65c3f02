"""Does one practice update move the policy by signal or by noise? A one-buffer probe.

    python -m bench.practice_probe [--policy best_policy.pt --reward best_stg.pt]
                                   [--episodes 60] [--steps 32] [--lr 1e-4] [--eval 100]

Collects practice tuples once (the starting policy sampling on a fleet, the frozen reward
model's d(o, g), the detector ending episodes as in practice: its threshold s and patience,
ground-truth success recorded but never ending an episode; R_t as ``core.learning.practice``
computes it), then,
from the same starting weights, takes ``--steps`` REINFORCE steps (AdamW, minibatches of 64,
the image pathway frozen, as practice does) with different weights on log pi(a_t | o_t, g):

- ``method``: R_t (docs/method.md, "Stage 2 practice (REINFORCE)": no baseline);
- ``mean``: R_t minus the buffer's mean R_t (``practice --baseline mean``);
- ``dbin``: R_t minus the mean R_t of the other tuples whose d(o_t, g) is in the same
  2-step bin (a state baseline from the reward model, no value network);
- ``noise``: Gaussian returns with R_t's spread (a control: an update that knows nothing);
- ``const``: R_t's mean everywhere.

For each it reports the policy's move on a probe set of the buffer's observations
(KL(old || new) of the action distribution, the fraction of greedy actions changed, the
entropy) and greedy success on fixed selection seeds. An update carrying signal should move
success up more than ``noise`` does; one that moves the policy as far as ``noise`` with no
better success is noise-dominated. The last line printed is ``RESULT {json}``.

Defaults: the self-improvement bench's 10 % checkpoint, the one its practice starts from
(``python -m bench.self_improvement --quick`` makes it; ``DEFAULT_RUN``).
"""
from __future__ import annotations

import argparse
import copy
import time
from typing import Any

import numpy as np

from bench.common import print_result
from bench.self_improvement import DEFAULT_ROOT, KEYPOINT_QUERY, QUICK, sft_run_dir

# The quick self-improvement bench's BC 10 % run (seed 0), named by the bench's own code.
DEFAULT_RUN = str(sft_run_dir(DEFAULT_ROOT, 0.1, KEYPOINT_QUERY, QUICK["epochs"][0.1], 0))
VARIANTS = ("method", "mean", "dbin", "noise", "const")


def dbin_baseline(returns: np.ndarray, d: np.ndarray, width: float = 2.0) -> np.ndarray:
    """Leave-one-out mean return of the tuples in the same ``width``-step bin of d."""
    bins = np.floor(np.asarray(d) / width).astype(np.int64)
    _, inv = np.unique(bins, return_inverse=True)
    sums, counts = np.bincount(inv, weights=returns), np.bincount(inv)
    own_sum, own_n = sums[inv] - returns, counts[inv] - 1
    overall = (returns.sum() - returns) / max(1, returns.size - 1)
    return np.where(own_n > 0, own_sum / np.maximum(own_n, 1), overall)


def weights(kind: str, returns: np.ndarray, d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if kind == "method":
        return returns
    if kind == "mean":
        return returns - returns.mean()
    if kind == "dbin":
        return returns - dbin_baseline(returns, d)
    if kind == "noise":
        return rng.normal(0.0, returns.std(), returns.size)
    if kind == "const":
        return np.full(returns.size, returns.mean())
    raise ValueError(f"unknown variant {kind!r}; choose from {', '.join(VARIANTS)}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", default=f"{DEFAULT_RUN}/best_policy.pt")
    ap.add_argument("--reward", default=f"{DEFAULT_RUN}/best_stg.pt")
    ap.add_argument("--episodes", type=int, default=60, help="practice episodes in the buffer")
    ap.add_argument("--steps", type=int, default=32, help="gradient steps per variant")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--eval", type=int, default=100, help="greedy episodes per variant")
    ap.add_argument("--fleet", type=int, default=8)
    ap.add_argument("--threshold", type=float, help="detector s (default: practice's, from the reward model)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    return ap


def practice_detector(args, reward, rmeta: dict[str, Any]):
    """The detector practice would start with: ``--threshold`` or the reward model's s (its
    calibration on demonstrations), with practice's patience."""
    from core.learning.practice import PracticeConfig
    from core.learning.practice.checks import demo_threshold
    from core.method.detector import DetectorSpec

    patience = PracticeConfig.patience
    s = args.threshold if args.threshold is not None else demo_threshold(args.reward, rmeta, patience, reward)
    return DetectorSpec(float(s), patience)


def collect_buffer(policy, reward, fleet, detector, episodes: int, seed: int
                   ) -> tuple[list[tuple], np.ndarray, np.ndarray, int]:
    """One buffer of practice tuples: the policy sampling, the detector (not ground truth)
    ending episodes, R_t from the reward model's progress. (tuples, R_t, d_t, episodes)."""
    import torch

    from core.learning.practice import PracticeConfig
    from core.learning.practice.update import episode_rewards, episode_tuples
    from core.learning.rollout import run_episodes
    from core.method import rewards as R
    from core.method.seeds import PRACTICE_SEED0

    seeds = list(range(PRACTICE_SEED0 + 900_000, PRACTICE_SEED0 + 900_000 + episodes))
    recs = run_episodes(policy, None, seeds, fleet=fleet, greedy=False, reward_model=reward,
                        stop_on_ground_truth=False, detector=detector, keep_frames=True,
                        generator=torch.Generator().manual_seed(seed))
    buf: list[tuple] = []
    d_t: list[float] = []
    for rec in recs:
        if rec.length:
            returns = R.discounted_returns(episode_rewards(rec, False), PracticeConfig.gamma)
            buf += episode_tuples(rec, returns)
            d_t += rec.d[: rec.length]
    return buf, np.array([b[4] for b in buf]), np.array(d_t), len(recs)


def updated_policy(policy, buf: list[tuple], w_all: np.ndarray, steps: int, lr: float,
                   rng: np.random.Generator):
    """A copy of ``policy`` after ``steps`` REINFORCE steps weighted by ``w_all`` (AdamW,
    minibatches of 64, the image pathway frozen, as practice does)."""
    import torch

    from core.learning.practice.update import reinforce_loss, tuples_batch

    nf, nb = policy.config.n_frames, policy.config.action_bins
    p = copy.deepcopy(policy)
    for m in p.vision_modules():
        m.requires_grad_(False)
    params = [q for q in p.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    p.eval()
    for _ in range(steps):
        idx = rng.choice(len(buf), 64, replace=False)
        logp = p.action_log_prob(tuples_batch([buf[j] for j in idx], nf, nb))
        loss = reinforce_loss(logp, torch.tensor(w_all[idx]), 0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    return p


def probe_variants(args, policy, reward, fleet, detector) -> dict[str, Any]:
    """Collect the buffer, then update a copy of the policy per variant and measure its move."""
    import torch

    from core.learning.practice.update import tuples_batch
    from core.learning.rollout import run_episodes
    from core.method.seeds import SELECT_SEED0

    buf, ret, d, n_recs = collect_buffer(policy, reward, fleet, detector, args.episodes, args.seed)
    probe = tuples_batch(buf[:: max(1, len(buf) // 128)][:128], policy.config.n_frames, policy.config.action_bins)

    def success(p) -> float:
        eps = run_episodes(p, None, list(range(SELECT_SEED0, SELECT_SEED0 + args.eval)), fleet=fleet, greedy=True)
        return float(np.mean([e.success for e in eps]))

    def dist(p) -> torch.Tensor:
        with torch.no_grad():
            return torch.log_softmax(p.predict(probe)[0].float(), -1)

    base_lp = dist(policy)
    out: dict[str, Any] = {"tuples": len(buf), "return_mean": float(ret.mean()), "return_std": float(ret.std()),
                           "dbin_residual_std": float((ret - dbin_baseline(ret, d)).std()),
                           "threshold_s": detector.threshold_s, "patience": detector.patience,
                           "steps": args.steps, "lr": args.lr,
                           "base_success": success(policy), "eval_episodes": args.eval, "variants": {}}
    print(f"buffer: {len(buf)} tuples from {n_recs} episodes; R mean {ret.mean():.2f} std {ret.std():.2f}; "
          f"base success {out['base_success']:.2f}", flush=True)
    for kind in [v.strip() for v in args.variants.split(",") if v.strip()]:
        rng = np.random.default_rng([args.seed, VARIANTS.index(kind) if kind in VARIANTS else 99])
        p = updated_policy(policy, buf, weights(kind, ret, d, rng), args.steps, args.lr, rng)
        lp = dist(p)
        row = {"kl": float((base_lp.exp() * (base_lp - lp)).sum(-1).mean()),
               "greedy_changed": float((lp.argmax(-1) != base_lp.argmax(-1)).float().mean()),
               "entropy": float(-(lp.exp() * lp).sum(-1).mean()), "success": success(p)}
        out["variants"][kind] = row
        print(f"{kind:>7}: KL {row['kl']:.3f}  greedy changed {row['greedy_changed']:.2f}  "
              f"entropy {row['entropy']:.2f}  success {row['success']:.2f}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    import torch

    from core.learning.checkpoint import CheckpointError, load_checkpoint
    from core.learning.fleets import ProcessFleet
    from core.learning.practice import PracticeRefused

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    dev = torch.device("cpu")
    try:
        policy, _ = load_checkpoint(args.policy, dev)
        reward, rmeta = load_checkpoint(args.reward, dev)
    except CheckpointError as e:
        print(f"error: {e}. The defaults come from `python -m bench.self_improvement --quick`; or pass "
              f"--policy and --reward.")
        return 2
    reward.requires_grad_(False)
    try:
        detector = practice_detector(args, reward, rmeta)
    except PracticeRefused as e:
        print(f"error: {e}")
        return 2
    fleet = ProcessFleet(rmeta.get("backend", "tabletop"), {**rmeta.get("env_config", {}),
                                                           "terminate_on_success": False}, args.fleet)
    try:
        out = probe_variants(args, policy, reward, fleet, detector)
    finally:
        fleet.close()
    out["minutes"] = (time.perf_counter() - t0) / 60
    print_result(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Does one practice update move the policy by signal or by noise? A one-buffer probe.

    python -m bench.practice_probe [--policy best_policy.pt --reward best_stg.pt]
                                   [--episodes 60] [--steps 32] [--lr 1e-4] [--eval 100]

Collects practice tuples once (the starting policy sampling on a fleet, the frozen reward
model's d(o, g), the detector ending episodes, R_t as ``core.learning.practice`` computes it), then,
from the same starting weights, takes ``--steps`` REINFORCE steps (AdamW, minibatches of 64,
the image pathway frozen, as practice does) with different weights on log pi(a_t | o_t, g):

- ``method``: R_t (METHOD.md: no baseline);
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

Defaults: the self-improvement bench's 10 % checkpoint (``python -m bench.self_improvement
--quick`` makes it).
"""
from __future__ import annotations

import argparse
import copy
import time
from typing import Any

import numpy as np

from bench.common import print_result

DEFAULT_RUN = "data/bench/self_improvement/sft-10-s0"
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", default=f"{DEFAULT_RUN}/best_policy.pt")
    ap.add_argument("--reward", default=f"{DEFAULT_RUN}/best_stg.pt")
    ap.add_argument("--episodes", type=int, default=60, help="practice episodes in the buffer")
    ap.add_argument("--steps", type=int, default=32, help="gradient steps per variant")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--eval", type=int, default=100, help="greedy episodes per variant")
    ap.add_argument("--fleet", type=int, default=8)
    ap.add_argument("--threshold", type=float, help="detector s (default: the checkpoint's)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    from core.method import rewards as R
    from core.learning.checkpoint import load_checkpoint
    from core.learning.evaluate import SELECT_SEED0
    from core.learning.fleets import ProcessFleet
    from core.learning.practice import PRACTICE_SEED0, _batch, _episode_tuples, _tuples
    from core.method.detector import DetectorSpec
    from core.learning.rollout import run_episodes

    from core.learning.checkpoint import CheckpointError

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
    s = args.threshold if args.threshold is not None else float(rmeta.get("threshold_s") or 1.5)
    fleet = ProcessFleet(rmeta.get("backend", "tabletop"), {**rmeta.get("env_config", {}),
                                                           "terminate_on_success": False}, args.fleet)
    try:
        seeds = list(range(PRACTICE_SEED0 + 900_000, PRACTICE_SEED0 + 900_000 + args.episodes))
        recs = run_episodes(policy, None, seeds, fleet=fleet, greedy=False, reward_model=reward,
                            detector=DetectorSpec(s, 2), keep_frames=True,
                            generator=torch.Generator().manual_seed(args.seed))
        buf: list[tuple] = []
        d_t: list[float] = []
        for rec in recs:
            if rec.length:
                returns, _ = _episode_tuples(rec, 0.9, False)
                buf += _tuples(rec, returns)
                d_t += rec.d[: rec.length]
        ret = np.array([b[4] for b in buf])
        d = np.array(d_t)
        nf, nb = policy.config.n_frames, policy.config.action_bins
        probe = _batch(buf[:: max(1, len(buf) // 128)][:128], nf, nb)

        def success(p) -> float:
            eps = run_episodes(p, None, list(range(SELECT_SEED0, SELECT_SEED0 + args.eval)), fleet=fleet,
                               greedy=True)
            return float(np.mean([e.success for e in eps]))

        def dist(p) -> torch.Tensor:
            with torch.no_grad():
                return torch.log_softmax(p.predict(probe)[0].float(), -1)

        base_lp = dist(policy)
        out: dict[str, Any] = {"tuples": len(buf), "return_mean": float(ret.mean()), "return_std": float(ret.std()),
                               "dbin_residual_std": float((ret - dbin_baseline(ret, d)).std()),
                               "threshold_s": s, "steps": args.steps, "lr": args.lr,
                               "base_success": success(policy), "eval_episodes": args.eval, "variants": {}}
        print(f"buffer: {len(buf)} tuples from {len(recs)} episodes; R mean {ret.mean():.2f} std {ret.std():.2f}; "
              f"base success {out['base_success']:.2f}", flush=True)
        for kind in [v.strip() for v in args.variants.split(",") if v.strip()]:
            rng = np.random.default_rng([args.seed, VARIANTS.index(kind) if kind in VARIANTS else 99])
            w_all = weights(kind, ret, d, rng)
            p = copy.deepcopy(policy)
            for m in p.vision_modules():
                m.requires_grad_(False)
            params = [q for q in p.parameters() if q.requires_grad]
            opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
            p.eval()
            for _ in range(args.steps):
                idx = rng.choice(len(buf), 64, replace=False)
                logp = p.action_log_prob(_batch([buf[j] for j in idx], nf, nb))
                loss = R.reinforce_loss(logp, torch.tensor(w_all[idx]), 0.05)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
            lp = dist(p)
            row = {"kl": float((base_lp.exp() * (base_lp - lp)).sum(-1).mean()),
                   "greedy_changed": float((lp.argmax(-1) != base_lp.argmax(-1)).float().mean()),
                   "entropy": float(-(lp.exp() * lp).sum(-1).mean()), "success": success(p)}
            out["variants"][kind] = row
            print(f"{kind:>7}: KL {row['kl']:.3f}  greedy changed {row['greedy_changed']:.2f}  "
                  f"entropy {row['entropy']:.2f}  success {row['success']:.2f}", flush=True)
    finally:
        fleet.close()
    out["minutes"] = (time.perf_counter() - t0) / 60
    print_result(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

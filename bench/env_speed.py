"""Tabletop backend speed and scripted-expert quality.

Run: ``python -m bench.env_speed [--seeds 200] [--steps 2000]``. Prints a human summary and,
last, ``RESULT {json}``.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from sim_backends.tabletop import BLOCK2BLOCK, BLOCK2LOCATION, TabletopConfig, TabletopEnv
from sim_backends.tabletop.expert import run_expert_episode


def env_steps_per_second(steps: int, seed: int = 0) -> float:
    """Bare env with random actions, rendering every step at the default resolution."""
    rng = np.random.default_rng(seed)
    with TabletopEnv(TabletopConfig()) as env:
        env.reset(seed=seed)
        start = time.perf_counter()
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(rng.uniform(-1.0, 1.0, size=2))
            if terminated or truncated:
                env.reset()
        return steps / (time.perf_counter() - start)


def expert_quality(family: str, seeds: int) -> dict[str, float]:
    rng = np.random.default_rng(12345)
    successes, lengths, off_table = [], [], 0
    start = time.perf_counter()
    with TabletopEnv(TabletopConfig(family=family)) as env:
        for seed in range(seeds):
            ep = run_expert_episode(env, seed, rng)
            successes.append(ep["success"])
            lengths.append(ep["length"])
            off_table += bool(ep["infos"][-1]["off_table"])
    elapsed = time.perf_counter() - start
    ok = [n for n, s in zip(lengths, successes) if s]
    return {
        "success_rate": float(np.mean(successes)),
        "mean_length": float(np.mean(lengths)),
        "mean_length_successful": float(np.mean(ok)) if ok else float("nan"),
        "p90_length": float(np.percentile(lengths, 90)),
        "off_table_rate": off_table / seeds,
        "expert_steps_per_s": float(np.sum(lengths) / elapsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=200, help="expert episodes per family")
    parser.add_argument("--steps", type=int, default=2000, help="random-action steps to time")
    args = parser.parse_args()
    result: dict[str, object] = {"env_steps_per_s": env_steps_per_second(args.steps)}
    print(f"env: {result['env_steps_per_s']:.0f} steps/s (random actions, 64x64 render every step)")
    for family in (BLOCK2BLOCK, BLOCK2LOCATION):
        q = expert_quality(family, args.seeds)
        result[family] = q
        print(f"{family}: expert success {q['success_rate']:.3f} over {args.seeds} seeds, "
              f"mean length {q['mean_length']:.1f} (p90 {q['p90_length']:.0f}), "
              f"off-table {q['off_table_rate']:.3f}")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()

"""Helpers shared by the benchmark scripts: result line, timing, speed probes."""
from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


def print_result(result: dict[str, Any]) -> None:
    """The last line of every bench: ``RESULT {json}``."""
    print("RESULT " + json.dumps(result, sort_keys=True, default=float), flush=True)


def env_steps_per_second(backend: str, env_config: dict[str, Any], steps: int = 1000, seed: int = 0) -> float:
    """Bare environment speed: random actions, rendering on, one process."""
    from sim_backends.registry import make_env

    env = make_env(backend, env_config)
    rng = np.random.default_rng(seed)
    try:
        env.reset(seed=seed)
        t0 = time.perf_counter()
        for _ in range(steps):
            _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, env.action_dim).astype(np.float32))
            if term or trunc:
                env.reset(seed=int(rng.integers(1 << 30)))
        return steps / (time.perf_counter() - t0)
    finally:
        env.close()


def policy_latency_ms(model, backend: str, env_config: dict[str, Any], batch: int = 1,
                      iters: int = 200) -> dict[str, float]:
    """Wall time of one ``act`` call (actions + d(o, g)) on real observations."""
    from core.policy import make_obs_batch
    from core.stats import percentiles_ms
    from sim_backends.registry import make_env

    env = make_env(backend, env_config)
    try:
        obs, _ = env.reset(seed=0)
    finally:
        env.close()
    n = model.config.n_frames
    frames = np.repeat(np.stack([obs["image"]] * n)[None], batch, 0)
    prop = np.repeat(np.stack([obs["proprio"]] * n)[None], batch, 0)
    b = make_obs_batch(frames, prop, [obs["instruction"]] * batch)
    model.eval()
    for _ in range(10):
        model.act(b)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        model.act(b)
        times.append(time.perf_counter() - t0)
    return percentiles_ms(times)

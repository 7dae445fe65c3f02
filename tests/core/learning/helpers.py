"""Helpers for core tests: a tiny policy config and synthetic batches/episodes."""
from __future__ import annotations

import numpy as np
import torch

from core.learning import policy as P
from core.learning.dataset import Episode

INSTRUCTIONS = ["push the red moon to the blue cube", "move the green star to the top left corner"]


def tiny_config(**overrides) -> P.PolicyConfig:
    kw = dict(d_model=32, n_layers=1, n_heads=2, image_size=32, stg_cap=10, stg_bin_width=2,
              text_encoder="minilm", dropout=0.0)
    kw.update(overrides)
    return P.PolicyConfig(**kw)


def make_batch(cfg: P.PolicyConfig, b: int = 6, seed: int = 0, n_frames: int = 2) -> dict:
    """A fixed synthetic training batch for ``cfg`` (both frames always present)."""
    g = np.random.default_rng(seed)
    mask = np.ones(b, bool)
    mask[-1] = False
    return {
        P.FRAMES: torch.from_numpy(g.integers(0, 256, (b, n_frames, cfg.image_size, cfg.image_size, 3),
                                              dtype=np.uint8)),
        P.PROPRIO: torch.from_numpy(g.uniform(-0.3, 0.3, (b, n_frames, cfg.proprio_dim)).astype(np.float32)),
        P.INSTRUCTION: [INSTRUCTIONS[i % 2] for i in range(b)],
        P.ACTION_BINS: torch.from_numpy(g.integers(0, cfg.action_bins, (b, cfg.action_dim))),
        P.ACTION_MASK: torch.from_numpy(mask),
        P.STG: torch.from_numpy(g.integers(0, 2 * cfg.stg_cap, b)),
    }


def make_episode(seed: int = 7, T: int = 3, size: int = 8, instruction: str = INSTRUCTIONS[0],
                 rng_seed: int | None = None) -> Episode:
    g = np.random.default_rng(seed if rng_seed is None else rng_seed)
    return Episode(frames=g.integers(0, 256, (T + 1, size, size, 3), dtype=np.uint8),
                   proprio=g.uniform(-0.3, 0.3, (T + 1, 2)).astype(np.float32),
                   actions=g.uniform(-1, 1, (T, 2)).astype(np.float32),
                   instruction=instruction, seed=seed, success=True)

"""A small dataset in Dojo's own format (core/learning/dataset.py) for tests: each episode's frames show
a red block on a grey table, so a frame means something on a screenshot."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.learning.dataset import Episode, write_episode, write_meta

INSTRUCTION = "push the <b>red</b> block {} to the top left"  # markup in it must show as text


def write_tiny_dataset(root: Path, n: int = 3, *, keypoints_on=(), size: int = 16, backend: str = "tabletop") -> Path:
    """``n`` episodes (seed i has 5 + i actions); those in ``keypoints_on`` carry every-frame keypoints
    as a simulator's demonstrations do."""
    rng = np.random.default_rng(0)
    write_meta(root, {"backend": backend, "env_config": {}})
    for seed in range(n):
        T = 5 + seed
        frames = np.full((T + 1, size, size, 3), 110, np.uint8)
        for t in range(T + 1):
            x0 = size // 4 + t * size // (4 * (T + 1))
            frames[t, size // 4: size // 4 + size // 6, x0: x0 + size // 6] = (220, 30, 30)
        kp = rng.uniform(-1, 1, (T + 1, 2, 2)).astype(np.float32) if seed in keypoints_on else None
        write_episode(root, Episode(frames=frames, proprio=rng.normal(size=(T + 1, 4)).astype(np.float32),
                                    actions=rng.uniform(-1, 1, (T, 2)).astype(np.float32),
                                    instruction=INSTRUCTION.format(seed), seed=seed, success=True, keypoints=kp))
    return root

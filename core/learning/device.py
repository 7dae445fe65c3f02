"""Where the learner runs: ``--device auto`` is CUDA when torch sees a GPU, else the CPU."""
from __future__ import annotations

import torch


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch sees no CUDA GPU; use --device cpu")
    return torch.device(spec)

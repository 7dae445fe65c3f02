"""Training targets for the steps-to-go head (torch). The bins themselves are
``core.method.steps_to_go``."""
from __future__ import annotations

import torch

from core.method.steps_to_go import num_bins, stg_to_bin


def soft_stg_targets(labels: torch.Tensor, cap: int, bin_width: int, sigma: float) -> torch.Tensor:
    """Target distributions over bins for steps-to-go ``labels`` [B] -> [B, n_bins].

    sigma = 0 gives the one-hot bin(T - t) of the paper's loss (docs/method.md, "Stage 1").
    sigma > 0 spreads the label as a Gaussian (in steps) integrated over each bin
    ("HL-Gauss", Imani & White 2018; Farebrother et al. 2024): neighbouring steps-to-go
    share credit, which the ordinal target rewards, while the head stays a categorical.
    """
    n = num_bins(cap, bin_width)
    y = torch.clamp(labels, max=cap).to(torch.float32)
    if sigma <= 0:
        return torch.nn.functional.one_hot(stg_to_bin(labels, cap, bin_width), n).to(torch.float32)
    edges = torch.arange(n + 1, dtype=torch.float32, device=labels.device) * bin_width - 0.5
    edges[-1] = float(cap) + 0.5
    cdf = 0.5 * (1 + torch.erf((edges.unsqueeze(0) - y.unsqueeze(1)) / (sigma * 2 ** 0.5)))
    mass = cdf[:, 1:] - cdf[:, :-1]
    return mass / mass.sum(1, keepdim=True).clamp(min=1e-12)

"""The plain ``F.unfold`` formulation of the cross-domain adaptive filter.

It materialises a (B, C, k*k, H, W) tensor and is far too slow and memory-hungry for real use
(see BENCHMARKS.md). It is kept as the executable definition the fused paths are tested and
benchmarked against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_domain_filter_unfold(
    query: torch.Tensor, source: torch.Tensor, kernel_size: int
) -> torch.Tensor:
    """Reference filter: ``out[p] = sum_o softmax_o(<query[p], source[p+o]>) * source[p+o]``.

    The k x k neighbourhood is zero-padded at the borders and the padded zeros take part in
    the softmax (their logit is 0), exactly as ``F.unfold(padding=k//2)`` gives them.
    """
    b, c, h, w = source.shape
    k = kernel_size
    neighbours = F.unfold(source, k, padding=k // 2).view(b, c, k * k, h, w)
    weights = (neighbours * query.unsqueeze(2)).sum(1).softmax(1)
    return (neighbours * weights.unsqueeze(1)).sum(2)

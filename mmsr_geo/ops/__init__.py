"""Cross-domain adaptive filtering (MMSR, eq. 1-4), fused so that no k*k neighbourhood tensor
is ever materialised.

``cross_domain_filter`` picks the fastest implementation for the tensors' device: numba kernels
on the CPU; fused Triton kernels on CUDA tensors when Triton is installed and supports the
dtype and channel count (:mod:`mmsr_geo.ops.triton_filter`); the offset-loop autograd function
elsewhere. The numba and offset-loop backends agree with the ``F.unfold`` definition in
:mod:`mmsr_geo.ops.reference` to float64 round-off, the float32 Triton kernels to float32
round-off, forward and backward.
"""

from __future__ import annotations

import torch

from .reference import cross_domain_filter_unfold
from .shifted import ShiftedCrossDomainFilter


def _check(query: torch.Tensor, source: torch.Tensor, kernel_size: int) -> None:
    if query.dim() != 4 or query.shape != source.shape:
        raise ValueError(
            f"query and source must both be (B, C, H, W) of one shape, got "
            f"{tuple(query.shape)} and {tuple(source.shape)}"
        )
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    if query.device != source.device or query.dtype != source.dtype:
        raise ValueError("query and source must share device and dtype")


def cross_domain_filter(
    query: torch.Tensor, source: torch.Tensor, kernel_size: int, *, backend: str = "auto"
) -> torch.Tensor:
    """Replace every pixel of ``source`` by a softmax-weighted sum of its k x k neighbourhood.

    For every pixel p: ``w = softmax_o(<query[p], source[p+o]>)`` over the k x k offsets o of
    the zero-padded neighbourhood (padded zeros take part in the softmax), and
    ``out[p] = sum_o w_o * source[p+o]``. No 1/sqrt(C) scaling, as in the paper.

    Args:
        query: (B, C, H, W) features whose pixels the weights target (the *other* modality).
        source: (B, C, H, W) features that are filtered.
        kernel_size: odd neighbourhood size k.
        backend: "auto", "cpu" (numba kernels), "triton" (fused Triton kernels: CUDA tensors,
            float32/float16/bfloat16, at most 128 channels), "shifted" (offset loop, any device)
            or "unfold" (reference; huge memory). "auto" takes "cpu" for CPU tensors, "triton"
            for CUDA tensors it supports, else "shifted".
    """
    _check(query, source, kernel_size)
    if backend == "auto":
        backend = _auto_backend(query, source)
    if backend == "triton":
        from .triton_filter import TritonCrossDomainFilter

        return TritonCrossDomainFilter.apply(query, source, kernel_size)
    if backend == "cpu":
        from .cpu import CpuCrossDomainFilter

        return CpuCrossDomainFilter.apply(query, source, kernel_size)
    if backend == "shifted":
        return ShiftedCrossDomainFilter.apply(query, source, kernel_size)
    if backend == "unfold":
        return cross_domain_filter_unfold(query, source, kernel_size)
    raise ValueError(f"unknown backend {backend!r}: use auto, cpu, triton, shifted or unfold")


def _auto_backend(query: torch.Tensor, source: torch.Tensor) -> str:
    if source.device.type == "cpu":
        return "cpu" if _cpu_available() else "shifted"
    if source.device.type == "cuda":
        from .triton_filter import supports

        if supports(query, source):
            return "triton"
    return "shifted"


def _cpu_available() -> bool:
    try:
        from . import cpu  # noqa: F401
    except ImportError:
        return False
    return True


__all__ = ["cross_domain_filter", "cross_domain_filter_unfold"]

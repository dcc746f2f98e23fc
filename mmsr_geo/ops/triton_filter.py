"""Fused GPU cross-domain filter: Triton kernels, forward and hand-written backward.

Why: the offset loop (:mod:`mmsr_geo.ops.shifted`) runs ~4 k*k full passes over (B, C, H, W)
tensors and keeps the (B, k*k, H, W) softmax weights between forward and backward. Here the
forward is one kernel launch and the backward two, each reading a pixel block's neighbours once
per block, and nothing of size k*k * H * W ever reaches global memory:

* Forward: an online softmax over the k*k offsets, as in flash attention: a running max, a
  running sum of exponentials and a running weighted sum of the neighbours, rescaled whenever
  the max grows, all in float32. Besides the inputs and the output, only the per-pixel
  log-sum-exp of the logits (B, H, W, float32) is saved, from which the backward recomputes any
  weight as ``exp(logit - lse)``.
* Backward, first kernel: ``delta[p] = <grad_out[p], out[p]>`` (flash attention's delta,
  stored per pixel) and the query gradient ``sum_o w_o (<grad_out[p], source[p+o]> - delta[p])
  source[p+o]``, one sweep over the offsets.
* Backward, second kernel: the source gradient is *gathered*: pixel r collects the terms of all
  pixels r - o that used it as their neighbour at offset o, recomputing their weights from
  their lse. Every program writes only its own pixels, so there are no atomics and the result
  is deterministic (bit-identical between runs).

Supported: CUDA tensors (or CPU tensors under Triton's interpreter, ``TRITON_INTERPRET=1``,
which is how the tests run without a GPU) of dtype float32, float16 or bfloat16 with 1 to
:data:`MAX_CHANNELS` channels, any odd k (tested 1 to 15), any image size. Arithmetic is
float32; outputs and gradients come in the input dtype. float64 is rejected with a ValueError
(the kernels accumulate in float32, which would silently lose its precision):
``cross_domain_filter(backend="auto")`` then falls back to the "shifted" backend.

Layout: all tensors are made contiguous in the source's memory format (channels-last stays
channels-last without a copy; a query in another format is copied once), and the output and both
gradients come in that format. The kernels are imported on first use, so this module imports
(and :func:`triton_available` answers) without Triton installed.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util

import torch
from torch.autograd.function import once_differentiable

MAX_CHANNELS = 128
"""Most channels per pixel: one program keeps all channels of its pixels in registers."""

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@functools.cache
def triton_available() -> bool:
    """Whether Triton is installed (it may still lack a GPU to compile for)."""
    return importlib.util.find_spec("triton") is not None


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _unsupported_reason(query: torch.Tensor, source: torch.Tensor) -> str | None:
    """Why the Triton backend cannot filter these (B, C, H, W) tensors, or None if it can."""
    if not triton_available():
        return "the triton backend needs Triton installed (pip install triton)"
    if source.dtype not in SUPPORTED_DTYPES:
        return (
            f"the triton backend supports float32, float16 and bfloat16, not {source.dtype} "
            "(it accumulates in float32); use backend='shifted'"
        )
    _, c, h, w = source.shape
    if c > MAX_CHANNELS:
        return (
            f"the triton backend supports up to {MAX_CHANNELS} channels, got {c}; "
            "use backend='shifted'"
        )
    if h * w >= 2**31:
        return f"the triton backend needs H * W < 2**31, got {h} x {w}"
    from . import _triton_kernels

    devices = {query.device.type, source.device.type}
    if devices != {"cuda"} and not _triton_kernels.INTERPRETED:
        return "the triton backend needs CUDA tensors (CPU tensors only with TRITON_INTERPRET=1)"
    return None


def _device_of(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Make ``t``'s GPU the current one: Triton launches on the current CUDA device."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def supports(query: torch.Tensor, source: torch.Tensor) -> bool:
    """Whether :class:`TritonCrossDomainFilter` can filter these (B, C, H, W) tensors here."""
    return _unsupported_reason(query, source) is None


class TritonCrossDomainFilter(torch.autograd.Function):
    """Cross-domain adaptive filter with fused Triton kernels (module docstring: limits)."""

    @staticmethod
    def forward(ctx, query: torch.Tensor, source: torch.Tensor, kernel_size: int) -> torch.Tensor:
        reason = _unsupported_reason(query, source)
        if reason is not None:
            raise ValueError(reason)
        from . import _triton_kernels

        fmt = _memory_format(source)
        q = query.contiguous(memory_format=fmt)
        s = source.contiguous(memory_format=fmt)
        with _device_of(s):
            out, lse = _triton_kernels.forward(q, s, kernel_size)
        ctx.save_for_backward(q, s, out, lse)
        ctx.kernel_size = kernel_size
        return out

    @staticmethod
    @once_differentiable
    def backward(
        ctx, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        from . import _triton_kernels

        q, s, out, lse = ctx.saved_tensors
        g = grad_out.to(s.dtype).contiguous(memory_format=_memory_format(s))
        want_q, want_s = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        with _device_of(s):
            grad_q, grad_s = _triton_kernels.backward(
                q, s, g, out, lse, ctx.kernel_size, want_q, want_s
            )
        return grad_q, grad_s, None

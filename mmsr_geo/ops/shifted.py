"""Device-generic fused cross-domain filter: a loop over the k*k offsets.

No (C, k*k, H, W) tensor is ever built: each offset contributes one shifted view of the
zero-padded source, so the extra memory is the (k*k, H, W) softmax weights plus a few C x H x W
buffers. Works on any torch device (it is the CUDA path); on the CPU the numba kernels in
:mod:`mmsr_geo.ops.cpu` are faster.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _offsets(kernel_size: int):
    return [(dy, dx) for dy in range(kernel_size) for dx in range(kernel_size)]


def filter_weights(query: torch.Tensor, source: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Softmax weights (B, k*k, H, W) of every offset, offsets in row-major (dy, dx) order."""
    b, _, h, w = source.shape
    pad = kernel_size // 2
    padded = F.pad(source, (pad, pad, pad, pad))
    logits = source.new_empty((b, kernel_size * kernel_size, h, w))
    for i, (dy, dx) in enumerate(_offsets(kernel_size)):
        logits[:, i] = (query * padded[:, :, dy : dy + h, dx : dx + w]).sum(1)
    return logits.softmax(1)


class ShiftedCrossDomainFilter(torch.autograd.Function):
    """Autograd function with a hand-written backward (no autograd graph over k*k ops)."""

    @staticmethod
    def forward(ctx, query: torch.Tensor, source: torch.Tensor, kernel_size: int):
        _, _, h, w = source.shape
        pad = kernel_size // 2
        weights = filter_weights(query, source, kernel_size)
        padded = F.pad(source, (pad, pad, pad, pad))
        out = torch.zeros_like(source)
        for i, (dy, dx) in enumerate(_offsets(kernel_size)):
            out.addcmul_(weights[:, i : i + 1], padded[:, :, dy : dy + h, dx : dx + w])
        ctx.save_for_backward(query, source, weights)
        ctx.kernel_size = kernel_size
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        query, source, weights = ctx.saved_tensors
        k = ctx.kernel_size
        _, _, h, w = source.shape
        pad = k // 2
        padded = F.pad(source, (pad, pad, pad, pad))
        grad_out = grad_out.contiguous()
        # d loss / d weight_o = <grad_out[p], source[p+o]>
        grad_w = torch.empty_like(weights)
        for i, (dy, dx) in enumerate(_offsets(k)):
            grad_w[:, i] = (grad_out * padded[:, :, dy : dy + h, dx : dx + w]).sum(1)
        # softmax backward: d logit = w * (d w - sum_o w d w)
        grad_logits = weights * (grad_w - (weights * grad_w).sum(1, keepdim=True))
        del grad_w
        grad_query = torch.zeros_like(query) if ctx.needs_input_grad[0] else None
        grad_padded = torch.zeros_like(padded) if ctx.needs_input_grad[1] else None
        for i, (dy, dx) in enumerate(_offsets(k)):
            gl = grad_logits[:, i : i + 1]
            if grad_query is not None:
                grad_query.addcmul_(gl, padded[:, :, dy : dy + h, dx : dx + w])
            if grad_padded is not None:
                window = grad_padded[:, :, dy : dy + h, dx : dx + w]
                window.addcmul_(gl, query)
                window.addcmul_(weights[:, i : i + 1], grad_out)
        grad_source = None
        if grad_padded is not None:
            grad_source = grad_padded[:, :, pad : pad + h, pad : pad + w].contiguous()
        return grad_query, grad_source, None

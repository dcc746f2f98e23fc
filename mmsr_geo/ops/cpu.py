"""Fused CPU cross-domain filter: numba kernels, forward and hand-written backward.

Why: the ``F.unfold`` definition (:mod:`mmsr_geo.ops.reference`) builds a (B, C, k*k, H, W)
tensor, and the offset loop (:mod:`mmsr_geo.ops.shifted`) makes ~4 k*k full passes over
(B, C, H, W) tensors through torch's dispatcher. Here every image row is one parallel task (numba
``prange``) whose k rows of neighbours stay in cache, so the filter is three sweeps over the
image: forward, then two for the backward pass.

Layout: the kernels work on channels-last (B, H, W, C) arrays (no copy for channels-last
tensors), so every dot product and weighted sum runs over C contiguous values (SIMD) and the
k neighbours of a pixel in one row are k consecutive C-vectors; four neighbours are processed
per sweep over C, so each loaded value feeds several accumulators. Results are written
straight in the memory format of the corresponding input. The softmax weights are kept for the
backward pass as (B, H, k, W, k): all weights of one row and one kernel row dy form one
contiguous block. The softmax uses its own vectorisable exp.

Backward: a first pass recomputes ``dw_o = <grad_out[p], source[p+o]>``, turns it into
``dlogit = w * (dw - sum_o w dw)`` (stored) and forms the query gradient; a second pass
*gathers* the source gradient of pixel r from the pixels r - o that used it, so parallel rows
never write to the same memory. Peak extra memory is O((C + k*k) * H * W): the weights, the
logit gradients and a few (B, H, W, C) arrays; nothing of size C * k*k * H * W is allocated.

Arithmetic runs in the inputs' dtype (float32 or float64; other dtypes run in float32 and are
cast back). The first call per dtype compiles the kernels (about 10 s); later processes load
them from numba's on-disk cache. Threads: numba's default threading layer and thread count
(nothing global is set here); in a process forked after the kernels ran, they run serially.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Callable

import numba as nb
import numpy as np
import torch
from numba import types
from numba.core.dispatcher import Dispatcher
from numba.extending import overload
from torch.autograd.function import once_differentiable

# Everything but "nnan"/"ninf": NaN and inf inputs propagate as in torch.
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# exp(x) for x <= 0 as 2**n * exp(r), |r| <= ln(2)/2: Cody-Waite reduction, Taylor polynomial
# (degree 7 for float32, 12 for float64: truncation error below one ulp), exponent bits
# built directly. Unlike libm's exp it vectorises (numba has no vector math library here).
_LOG2E = 1.4426950408889634
_F32_LN2_HI, _F32_LN2_LO, _F32_MIN_ARG = np.float32(0.693359375), np.float32(-2.12194440e-4), -87
_F64_LN2_HI, _F64_LN2_LO, _F64_MIN_ARG = 0.693145751953125, 1.4286068203094173e-06, -708
_F32_TAYLOR = tuple(np.float32(1 / math.factorial(i)) for i in range(7, -1, -1))
_F64_TAYLOR = tuple(1 / math.factorial(i) for i in range(12, -1, -1))


def _exp_nonpositive(x: float) -> float:
    """``exp(x)`` for ``x <= 0`` (or NaN), flushed to 0 below the smallest normal result."""
    raise NotImplementedError("numba-only: call from jitted code")


def _exp_f32(x: float) -> float:
    n = np.floor(x * np.float32(_LOG2E) + np.float32(0.5))
    r = x - n * _F32_LN2_HI - n * _F32_LN2_LO
    p = _F32_TAYLOR[0]
    for coef in _F32_TAYLOR[1:]:
        p = p * r + coef
    scale = np.int32((np.int32(n) + 127) << 23).view(np.float32)
    return np.float32(0) if x < _F32_MIN_ARG else p * scale  # NaN stays NaN


def _exp_f64(x: float) -> float:
    n = np.floor(x * _LOG2E + 0.5)
    r = x - n * _F64_LN2_HI - n * _F64_LN2_LO
    p = _F64_TAYLOR[0]
    for coef in _F64_TAYLOR[1:]:
        p = p * r + coef
    scale = np.int64((np.int64(n) + 1023) << 52).view(np.float64)
    return 0.0 if x < _F64_MIN_ARG else p * scale


@overload(_exp_nonpositive, jit_options={"fastmath": _FASTMATH})
def _exp_nonpositive_overload(x: float) -> Callable[[float], float]:
    # Typing time: ``x`` is the argument's numba type (annotated like the implementations).
    return _exp_f32 if x == types.float32 else _exp_f64


# The kernels index arrays with full index tuples instead of taking per-pixel views: a view
# costs an atomic reference-count update on the shared parent array, which would dominate the
# short (C-long) inner loops and make the threads fight over one cache line.


@nb.njit(fastmath=_FASTMATH, cache=True)
def _correlate_row(a: np.ndarray, s: np.ndarray, b: int, y: int, k: int, out: np.ndarray) -> None:
    """``out[dy, x, dx] = <a[b, y, x], s[b, y + dy - k//2, x + dx - k//2]>``, 0 where padded.

    ``a``, ``s`` are channels-last (B, H, W, C), ``out`` is (k, W, k). Four neighbours share one
    sweep over the C channels of ``a[b, y, x]``.
    """
    _, h, w, c_n = s.shape
    pad = k // 2
    zero = s.dtype.type(0)
    out[:] = zero
    for dy in range(k):
        y2 = y + dy - pad
        if y2 < 0 or y2 >= h:
            continue
        for x in range(w):
            o = pad - x  # neighbour column x2 is at dx = o + x2
            x2 = max(0, x - pad)
            x_end = min(w, x + pad + 1)
            while x2 + 4 <= x_end:
                a0 = a1 = a2 = a3 = zero
                for c in range(c_n):
                    v = a[b, y, x, c]
                    a0 += v * s[b, y2, x2, c]
                    a1 += v * s[b, y2, x2 + 1, c]
                    a2 += v * s[b, y2, x2 + 2, c]
                    a3 += v * s[b, y2, x2 + 3, c]
                out[dy, x, o + x2] = a0
                out[dy, x, o + x2 + 1] = a1
                out[dy, x, o + x2 + 2] = a2
                out[dy, x, o + x2 + 3] = a3
                x2 += 4
            while x2 < x_end:
                a0 = zero
                for c in range(c_n):
                    a0 += a[b, y, x, c] * s[b, y2, x2, c]
                out[dy, x, o + x2] = a0
                x2 += 1


@nb.njit(fastmath=_FASTMATH, cache=True)
def _aggregate_row(
    coef: np.ndarray, s: np.ndarray, b: int, y: int, k: int, acc: np.ndarray
) -> None:
    """``acc[x] = sum coef[dy, x, dx] * s[b, y + dy - k//2, x + dx - k//2]``, unpadded terms.

    ``coef`` is (k, W, k), ``s`` channels-last (B, H, W, C), ``acc`` (W, C).
    """
    _, h, w, c_n = s.shape
    pad = k // 2
    acc[:] = 0
    for dy in range(k):
        y2 = y + dy - pad
        if y2 < 0 or y2 >= h:
            continue
        for x in range(w):
            o = pad - x
            x2 = max(0, x - pad)
            x_end = min(w, x + pad + 1)
            while x2 + 4 <= x_end:
                w0 = coef[dy, x, o + x2]
                w1 = coef[dy, x, o + x2 + 1]
                w2 = coef[dy, x, o + x2 + 2]
                w3 = coef[dy, x, o + x2 + 3]
                for c in range(c_n):
                    acc[x, c] += (
                        w0 * s[b, y2, x2, c]
                        + w1 * s[b, y2, x2 + 1, c]
                        + w2 * s[b, y2, x2 + 2, c]
                        + w3 * s[b, y2, x2 + 3, c]
                    )
                x2 += 4
            while x2 < x_end:
                w0 = coef[dy, x, o + x2]
                for c in range(c_n):
                    acc[x, c] += w0 * s[b, y2, x2, c]
                x2 += 1


@nb.njit(fastmath=_FASTMATH, cache=True)
def _gather_row(
    q: np.ndarray,
    g: np.ndarray,
    weights: np.ndarray,
    dlogits: np.ndarray,
    b: int,
    r: int,
    k: int,
    acc: np.ndarray,
) -> None:
    """``acc[x] = sum dlogits[p, o] * q[p] + weights[p, o] * g[p]`` over pixels p = (r, x) - o.

    Pixel p used (r, x) as its neighbour at offset o = (dy, dx), so this is the source gradient
    of row r. ``weights``, ``dlogits`` are (B, H, k, W, k): the k*k values of row y2 and one dy
    are one contiguous block, read once.
    """
    _, h, w, c_n = q.shape
    pad = k // 2
    acc[:] = 0
    for dy in range(k):
        y2 = r - dy + pad
        if y2 < 0 or y2 >= h:
            continue
        for x in range(w):
            o = x + pad  # pixel x2 of row y2 reaches x at dx = o - x2
            x2 = min(w - 1, x + pad)
            x_end = max(-1, x - pad - 1)
            while x2 - 1 > x_end:
                d0 = dlogits[b, y2, dy, x2, o - x2]
                w0 = weights[b, y2, dy, x2, o - x2]
                d1 = dlogits[b, y2, dy, x2 - 1, o - x2 + 1]
                w1 = weights[b, y2, dy, x2 - 1, o - x2 + 1]
                for c in range(c_n):
                    acc[x, c] += (
                        d0 * q[b, y2, x2, c]
                        + w0 * g[b, y2, x2, c]
                        + d1 * q[b, y2, x2 - 1, c]
                        + w1 * g[b, y2, x2 - 1, c]
                    )
                x2 -= 2
            if x2 > x_end:
                d0 = dlogits[b, y2, dy, x2, o - x2]
                w0 = weights[b, y2, dy, x2, o - x2]
                for c in range(c_n):
                    acc[x, c] += d0 * q[b, y2, x2, c] + w0 * g[b, y2, x2, c]


@nb.njit(fastmath=_FASTMATH, cache=True)
def _per_pixel_sum(flat: np.ndarray, k: int, out: np.ndarray) -> None:
    """``out[x*k : (x+1)*k] = sum(flat[x*k : (x+1)*k])``: per-pixel totals, spread back."""
    for x in range(out.shape[0] // k):
        total = flat[x * k]
        for dx in range(1, k):
            total += flat[x * k + dx]
        for dx in range(k):
            out[x * k + dx] = total


@nb.njit(fastmath=_FASTMATH, cache=True)
def _softmax_row(logits: np.ndarray) -> None:
    """In-place, max-subtracted softmax over axes 0 and 2 of a C-contiguous (k, W, k) block.

    Per-pixel quantities are spread over the pixel's k columns so that every pass is one
    contiguous, vectorisable loop over W*k values.
    """
    k, w, _ = logits.shape
    flat = logits.reshape((k, w * k))
    peak = np.empty(w * k, dtype=logits.dtype)
    for x in range(w):
        top = flat[0, x * k]
        for dy in range(k):
            for dx in range(k):
                top = max(top, flat[dy, x * k + dx])
        for dx in range(k):
            peak[x * k + dx] = top
    total = np.zeros(w * k, dtype=logits.dtype)
    for dy in range(k):
        for m in range(w * k):
            e = _exp_nonpositive(flat[dy, m] - peak[m])
            flat[dy, m] = e
            total[m] += e
    _per_pixel_sum(total, k, peak)
    for m in range(w * k):
        peak[m] = logits.dtype.type(1) / peak[m]
    for dy in range(k):
        for m in range(w * k):
            flat[dy, m] *= peak[m]


@nb.njit(fastmath=_FASTMATH, cache=True)
def _softmax_grad_row(weights: np.ndarray, grad: np.ndarray) -> None:
    """``grad = weights * (grad - sum(weights * grad))`` per pixel, in place; (k, W, k) blocks."""
    k, w, _ = weights.shape
    wf = weights.reshape((k, w * k))
    gf = grad.reshape((k, w * k))
    dot = np.zeros(w * k, dtype=weights.dtype)
    for dy in range(k):
        for m in range(w * k):
            dot[m] += wf[dy, m] * gf[dy, m]
    mean = np.empty_like(dot)
    _per_pixel_sum(dot, k, mean)
    for dy in range(k):
        for m in range(w * k):
            gf[dy, m] = wf[dy, m] * (gf[dy, m] - mean[m])


# The kernels take channels-last (B, H, W, C) inputs. Each result array is either channels-last
# too (written in place) or, with ``channels_first``, (B, C, H, W): then every row is
# accumulated in a (W, C) buffer and written transposed, which is cheaper than a layout copy.
_PARALLEL = {"parallel": True, "fastmath": _FASTMATH, "cache": True, "nogil": True}


@nb.njit(**_PARALLEL)
def _forward_kernel(
    q: np.ndarray,
    s: np.ndarray,
    k: int,
    weights: np.ndarray,
    out: np.ndarray,
    channels_first: bool,
) -> None:
    """Softmax ``weights`` (B, H, k, W, k) and filtered ``out`` from ``q``, ``s``."""
    b_n, h, w, c_n = s.shape
    for row in nb.prange(b_n * h):
        b = row // h
        y = row - b * h
        wr = weights[b, y]
        _correlate_row(q, s, b, y, k, wr)
        _softmax_row(wr)
        acc = np.empty((w, c_n), dtype=s.dtype) if channels_first else out[b, y]
        _aggregate_row(wr, s, b, y, k, acc)
        if channels_first:
            out[b, :, y, :] = acc.T


@nb.njit(**_PARALLEL)
def _logit_grad_kernel(
    g: np.ndarray,
    s: np.ndarray,
    k: int,
    weights: np.ndarray,
    dlogits: np.ndarray,
    grad_q: np.ndarray,
    channels_first: bool,
) -> None:
    """``dlogits`` (B, H, k, W, k) from ``g``, ``s``, and ``grad_q`` unless it is empty."""
    b_n, h, w, c_n = s.shape
    for row in nb.prange(b_n * h):
        b = row // h
        y = row - b * h
        wr = weights[b, y]
        dl = dlogits[b, y]
        _correlate_row(g, s, b, y, k, dl)  # d loss / d weight
        _softmax_grad_row(wr, dl)
        if grad_q.size:
            acc = np.empty((w, c_n), dtype=s.dtype) if channels_first else grad_q[b, y]
            _aggregate_row(dl, s, b, y, k, acc)
            if channels_first:
                grad_q[b, :, y, :] = acc.T


@nb.njit(**_PARALLEL)
def _source_grad_kernel(
    q: np.ndarray,
    g: np.ndarray,
    k: int,
    weights: np.ndarray,
    dlogits: np.ndarray,
    grad_s: np.ndarray,
    channels_first: bool,
) -> None:
    """Source gradient ``grad_s``, gathered row by row from ``q``, ``g`` and the weights."""
    b_n, h, w, c_n = q.shape
    for row in nb.prange(b_n * h):
        b = row // h
        r = row - b * h
        acc = np.empty((w, c_n), dtype=q.dtype) if channels_first else grad_s[b, r]
        _gather_row(q, g, weights, dlogits, b, r, k, acc)
        if channels_first:
            grad_s[b, :, r, :] = acc.T


# numba's "omp" threading layer is GNU OpenMP here, which cannot start parallel regions in a
# process forked after it started its threads (numba aborts the child). Such children run
# single-threaded twins of the kernels instead (compiled on first use, not cached: numba's
# cache would mix them up with the parallel ones).
_serial_only = False


def _after_fork_in_child() -> None:
    global _serial_only
    # ValueError: no parallel kernel ran before the fork, the child starts its own threads.
    with contextlib.suppress(ValueError):
        _serial_only = nb.threading_layer() == "omp"


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


@functools.cache
def _serial_twin(kernel: Dispatcher) -> Dispatcher:
    return nb.njit(fastmath=_FASTMATH, nogil=True)(kernel.py_func)


def _run(kernel: Dispatcher, *args: object) -> None:
    (_serial_twin(kernel) if _serial_only else kernel)(*args)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _channels_last(t: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    """(B, C, H, W) tensor -> C-contiguous (B, H, W, C) array; no copy for channels-last input."""
    return t.detach().to(dtype).permute(0, 2, 3, 1).contiguous().numpy()


def _is_channels_last(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def _empty_result(like: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """Result array for ``like``: (B, H, W, C) if ``like`` is channels-last, else (B, C, H, W)."""
    b_n, c_n, h, w = like.shape
    return np.empty((b_n, h, w, c_n) if _is_channels_last(like) else (b_n, c_n, h, w), dtype)


def _as_tensor(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """An :func:`_empty_result` array, filled, as a (B, C, H, W) tensor of ``like``'s dtype."""
    t = torch.from_numpy(a)
    return (t.permute(0, 3, 1, 2) if _is_channels_last(like) else t).to(like.dtype)


class CpuCrossDomainFilter(torch.autograd.Function):
    """Cross-domain adaptive filter on CPU tensors, with numba forward and backward kernels.

    Outputs and gradients take the memory format of the corresponding input (channels-last
    inputs skip all layout copies).
    """

    @staticmethod
    def forward(ctx, query: torch.Tensor, source: torch.Tensor, kernel_size: int) -> torch.Tensor:
        if query.device.type != "cpu" or source.device.type != "cpu":
            raise ValueError("the cpu backend needs CPU tensors")
        dtype = _compute_dtype(source.dtype)
        s = _channels_last(source, dtype)
        b_n, h, w, _ = s.shape
        weights = np.empty((b_n, h, kernel_size, w, kernel_size), dtype=s.dtype)
        out = _empty_result(source, s.dtype)
        channels_first = not _is_channels_last(source)
        q = _channels_last(query, dtype)
        _run(_forward_kernel, q, s, kernel_size, weights, out, channels_first)
        ctx.save_for_backward(query, source, torch.from_numpy(weights))
        ctx.kernel_size = kernel_size
        return _as_tensor(out, source)

    @staticmethod
    @once_differentiable
    def backward(
        ctx, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        query, source, weights_t = ctx.saved_tensors
        k = ctx.kernel_size
        want_q, want_s = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        weights = weights_t.numpy()
        s = _channels_last(source, weights_t.dtype)
        g = _channels_last(grad_out, weights_t.dtype)
        dlogits = np.empty_like(weights)
        grad_q = _empty_result(query, s.dtype) if want_q else np.empty((0, 0, 0, 0), s.dtype)
        _run(_logit_grad_kernel, g, s, k, weights, dlogits, grad_q, not _is_channels_last(query))
        del s
        grad_query = _as_tensor(grad_q, query) if want_q else None
        grad_source = None
        if want_s:
            grad_s = _empty_result(source, g.dtype)
            q = _channels_last(query, weights_t.dtype)
            channels_first = not _is_channels_last(source)
            _run(_source_grad_kernel, q, g, k, weights, dlogits, grad_s, channels_first)
            grad_source = _as_tensor(grad_s, source)
        return grad_query, grad_source, None

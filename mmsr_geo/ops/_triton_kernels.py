"""Triton kernels behind :mod:`mmsr_geo.ops.triton_filter` (imported only when they are used).

Every program handles ``BLOCK_P`` consecutive pixels (row-major within one image) and all C
channels of each, padded to ``BLOCK_C`` (a power of two) with masks, and loops over the k*k
offsets. Tensors are addressed through one set of (B, C, H, W) element strides, shared by every
(B, C, H, W) argument: the caller makes them all contiguous in one memory format. Per-pixel
(B, H, W) float32 buffers (log-sum-exp, delta) are plain contiguous. Batch and pixel offsets are
int64, so tensors beyond 2**31 elements are addressed correctly; the pixel index within one
image is int32 (the caller rejects H * W >= 2**31).

Neighbours outside the image are masked loads with ``other=0``: their value is 0 and their
logit <query, 0> is 0, which is exactly the zero padding of the definition.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Tile size: one program holds 3 (forward) or 4 (backward) float32 (BLOCK_P, BLOCK_C) tiles plus
# their int64 addresses; at 256 tile elements per warp (8 per thread) the kernels need about
# 100-120 registers per thread and do not spill (ptxas, sm_80 and sm_90, C = 64 and 128); 16
# per thread need ~200 registers, 32 spill.
_TILE = 2048
_ELEMENTS_PER_WARP = 256


@triton.jit
def _pixel_block(H, W, C, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's image (int64), pixel indices, their row/column, channels and masks.

    The grid is one-dimensional, image after image (CUDA's other grid axes stop at 65535).
    """
    blocks_per_image = tl.cdiv(H * W, BLOCK_P)
    b = tl.program_id(0) // blocks_per_image
    pix = (tl.program_id(0) - b * blocks_per_image) * BLOCK_P + tl.arange(0, BLOCK_P)
    in_image = pix < H * W
    y = pix // W
    x = pix - y * W
    ch = tl.arange(0, BLOCK_C)
    ch_ok = ch < C
    return b.to(tl.int64), pix, in_image, y, x, ch, ch_ok


@triton.jit
def _tile_offsets(b, y, x, ch, stride_b, stride_c, stride_h, stride_w):
    """int64 element offsets (BLOCK_P, BLOCK_C) of channels ``ch`` at pixels (b, y, x)."""
    pixel = b * stride_b + y.to(tl.int64) * stride_h + x.to(tl.int64) * stride_w
    return pixel[:, None] + ch.to(tl.int64)[None, :] * stride_c


@triton.jit
def _forward_kernel(
    q_ptr,
    s_ptr,
    out_ptr,
    lse_ptr,
    H,
    W,
    C,
    stride_b,
    stride_c,
    stride_h,
    stride_w,
    K: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """out[p] = softmax-weighted sum of the zero-padded neighbours; lse[p] of the logits."""
    b, pix, in_image, y, x, ch, ch_ok = _pixel_block(H, W, C, BLOCK_P, BLOCK_C)
    tile_ok = in_image[:, None] & ch_ok[None, :]
    offs = _tile_offsets(b, y, x, ch, stride_b, stride_c, stride_h, stride_w)
    q = tl.load(q_ptr + offs, mask=tile_ok, other=0.0).to(tl.float32)

    # Online softmax: running max, running sum of exp(logit - max) and running weighted sum,
    # all rescaled whenever the max grows.
    run_max = tl.full((BLOCK_P,), float("-inf"), tl.float32)
    run_sum = tl.zeros((BLOCK_P,), tl.float32)
    acc = tl.zeros((BLOCK_P, BLOCK_C), tl.float32)
    for o in range(K * K):
        ny = y + (o // K - K // 2)
        nx = x + (o % K - K // 2)
        ok = in_image & (ny >= 0) & (ny < H) & (nx >= 0) & (nx < W)
        n_offs = _tile_offsets(b, ny, nx, ch, stride_b, stride_c, stride_h, stride_w)
        s = tl.load(s_ptr + n_offs, mask=ok[:, None] & ch_ok[None, :], other=0.0)
        s = s.to(tl.float32)
        logit = tl.sum(q * s, axis=1)
        new_max = tl.maximum(run_max, logit)
        rescale = tl.exp(run_max - new_max)
        p = tl.exp(logit - new_max)
        run_sum = run_sum * rescale + p
        acc = acc * rescale[:, None] + p[:, None] * s
        run_max = new_max

    out = acc / run_sum[:, None]
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=tile_ok)
    tl.store(lse_ptr + b * H * W + pix, run_max + tl.log(run_sum), mask=in_image)


@triton.jit
def _query_grad_kernel(
    q_ptr,
    s_ptr,
    g_ptr,
    out_ptr,
    lse_ptr,
    delta_ptr,
    gq_ptr,
    H,
    W,
    C,
    stride_b,
    stride_c,
    stride_h,
    stride_w,
    K: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
    WANT_GQ: tl.constexpr,
):
    """delta[p] = <g[p], out[p]> and, if WANT_GQ, grad_q[p] = sum_o dl_o[p] s[p+o].

    dl_o = w_o (dw_o - delta) with w_o = exp(logit_o - lse) and dw_o = <g[p], s[p+o]>. Taking
    delta from the saved output first (rather than accumulating sum_o w_o dw_o in the same sweep
    and subtracting delta * out at the end) avoids a cancellation between two nearly equal
    terms when the softmax is peaked.
    """
    b, pix, in_image, y, x, ch, ch_ok = _pixel_block(H, W, C, BLOCK_P, BLOCK_C)
    tile_ok = in_image[:, None] & ch_ok[None, :]
    offs = _tile_offsets(b, y, x, ch, stride_b, stride_c, stride_h, stride_w)
    g = tl.load(g_ptr + offs, mask=tile_ok, other=0.0).to(tl.float32)
    out = tl.load(out_ptr + offs, mask=tile_ok, other=0.0).to(tl.float32)
    delta = tl.sum(g * out, axis=1)
    tl.store(delta_ptr + b * H * W + pix, delta, mask=in_image)
    if WANT_GQ:
        q = tl.load(q_ptr + offs, mask=tile_ok, other=0.0).to(tl.float32)
        lse = tl.load(lse_ptr + b * H * W + pix, mask=in_image, other=0.0)
        acc = tl.zeros((BLOCK_P, BLOCK_C), tl.float32)
        for o in range(K * K):
            ny = y + (o // K - K // 2)
            nx = x + (o % K - K // 2)
            ok = in_image & (ny >= 0) & (ny < H) & (nx >= 0) & (nx < W)
            n_offs = _tile_offsets(b, ny, nx, ch, stride_b, stride_c, stride_h, stride_w)
            s = tl.load(s_ptr + n_offs, mask=ok[:, None] & ch_ok[None, :], other=0.0)
            s = s.to(tl.float32)
            w = tl.exp(tl.sum(q * s, axis=1) - lse)
            dl = w * (tl.sum(g * s, axis=1) - delta)
            acc += dl[:, None] * s
        tl.store(gq_ptr + offs, acc.to(gq_ptr.dtype.element_ty), mask=tile_ok)


@triton.jit
def _source_grad_kernel(
    q_ptr,
    s_ptr,
    g_ptr,
    lse_ptr,
    delta_ptr,
    gs_ptr,
    H,
    W,
    C,
    stride_b,
    stride_c,
    stride_h,
    stride_w,
    K: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """grad_s[r] = sum_o dl_o[r-o] q[r-o] + w_o[r-o] g[r-o], gathered over in-image r - o.

    Pixel p = r - o saw s[r] as its neighbour at offset o, with weight
    w_o[p] = exp(<q[p], s[r]> - lse[p]) and logit gradient dl_o[p] = w_o[p] (<g[p], s[r]> -
    delta[p]). Each program writes only its own pixels: no atomics, deterministic.
    """
    b, pix, in_image, y, x, ch, ch_ok = _pixel_block(H, W, C, BLOCK_P, BLOCK_C)
    tile_ok = in_image[:, None] & ch_ok[None, :]
    offs = _tile_offsets(b, y, x, ch, stride_b, stride_c, stride_h, stride_w)
    s = tl.load(s_ptr + offs, mask=tile_ok, other=0.0).to(tl.float32)

    acc = tl.zeros((BLOCK_P, BLOCK_C), tl.float32)
    for o in range(K * K):
        py = y - (o // K - K // 2)
        px = x - (o % K - K // 2)
        ok = in_image & (py >= 0) & (py < H) & (px >= 0) & (px < W)
        p_offs = _tile_offsets(b, py, px, ch, stride_b, stride_c, stride_h, stride_w)
        p_ok = ok[:, None] & ch_ok[None, :]
        q = tl.load(q_ptr + p_offs, mask=p_ok, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + p_offs, mask=p_ok, other=0.0).to(tl.float32)
        p_pix = b * H * W + py * W + px
        lse = tl.load(lse_ptr + p_pix, mask=ok, other=0.0)
        delta = tl.load(delta_ptr + p_pix, mask=ok, other=0.0)
        w = tl.where(ok, tl.exp(tl.sum(q * s, axis=1) - lse), 0.0)
        dl = w * (tl.sum(g * s, axis=1) - delta)
        acc += dl[:, None] * q + w[:, None] * g

    tl.store(gs_ptr + offs, acc.to(gs_ptr.dtype.element_ty), mask=tile_ok)


def _launch_config(like: torch.Tensor) -> tuple[tuple[int], dict[str, int], list[int]]:
    """Grid, block sizes and warps, and the (B, C, H, W) strides shared by tensors like ``like``."""
    b, c, h, w = like.shape
    block_c = triton.next_power_of_2(c)
    block_p = max(16, min(128, _TILE // block_c))
    meta = {
        "BLOCK_P": block_p,
        "BLOCK_C": block_c,
        "num_warps": max(1, block_p * block_c // _ELEMENTS_PER_WARP),
    }
    return (b * triton.cdiv(h * w, block_p),), meta, list(like.stride())


def forward(
    q: torch.Tensor, s: torch.Tensor, kernel_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Filtered output (layout of ``s``) and the float32 (B, H, W) log-sum-exp of the logits."""
    b, c, h, w = s.shape
    out = torch.empty_like(s)
    lse = torch.empty((b, h, w), dtype=torch.float32, device=s.device)
    grid, meta, strides = _launch_config(s)
    _forward_kernel[grid](
        q,
        s,
        out,
        lse,
        h,
        w,
        c,
        *strides,
        K=kernel_size,
        **meta,
    )
    return out, lse


def backward(
    q: torch.Tensor,
    s: torch.Tensor,
    g: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    kernel_size: int,
    want_query: bool,
    want_source: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of query and source (None where not wanted), in the layout of ``s``."""
    _, c, h, w = s.shape
    grid, meta, strides = _launch_config(s)
    delta = torch.empty_like(lse)
    grad_q = torch.empty_like(s) if want_query else None
    _query_grad_kernel[grid](
        q,
        s,
        g,
        out,
        lse,
        delta,
        grad_q if want_query else delta,
        h,
        w,
        c,
        *strides,
        K=kernel_size,
        WANT_GQ=want_query,
        **meta,
    )
    grad_s = None
    if want_source:
        grad_s = torch.empty_like(s)
        _source_grad_kernel[grid](
            q,
            s,
            g,
            lse,
            delta,
            grad_s,
            h,
            w,
            c,
            *strides,
            K=kernel_size,
            **meta,
        )
    return grad_q, grad_s


INTERPRETED = not isinstance(_forward_kernel, triton.runtime.JITFunction)
"""True when Triton's interpreter (``TRITON_INTERPRET=1`` at import) runs these kernels."""

"""The fused cross-domain filters agree with the ``F.unfold`` definition, forward and backward.

Both fused backends ("cpu": numba kernels, "shifted": offset loop) are checked against
:func:`mmsr_geo.ops.reference.cross_domain_filter_unfold` in float64 for every odd k up to 15,
including images smaller than the kernel, with ``gradcheck`` and in float32. The first run on a
machine compiles the numba kernels (about 10 s per dtype); later runs load numba's cache.
"""

from __future__ import annotations

import multiprocessing
import os

import pytest
import torch

from mmsr_geo.ops import cross_domain_filter, cross_domain_filter_unfold

BACKENDS = ["cpu", "shifted"]
KERNEL_SIZES = list(range(1, 16, 2))
# (B, C, H, W): batch and channels > 1, images smaller than most kernels, 1-pixel rows/columns.
SHAPES = [(2, 3, 6, 7), (1, 2, 1, 2), (1, 4, 9, 1), (2, 5, 17, 12)]


def _inputs(shape, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    query, source, grad = (torch.randn(shape, generator=gen, dtype=dtype) for _ in range(3))
    return query.requires_grad_(), source.requires_grad_(), grad


def _forward_backward(fn, query, source, grad):
    out = fn(query, source)
    grad_query, grad_source = torch.autograd.grad(out, (query, source), grad)
    return out, grad_query, grad_source


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kernel_size", KERNEL_SIZES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_unfold_reference_float64(backend, kernel_size, shape):
    query, source, grad = _inputs(shape, seed=kernel_size)
    got = _forward_backward(
        lambda q, s: cross_domain_filter(q, s, kernel_size, backend=backend), query, source, grad
    )
    want = _forward_backward(
        lambda q, s: cross_domain_filter_unfold(q, s, kernel_size), query, source, grad
    )
    for name, a, b in zip(("output", "grad query", "grad source"), got, want, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        assert (a - b).abs().max().item() <= 1e-8, name


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("shape", "kernel_size"), [((1, 2, 4, 5), 3), ((2, 3, 3, 2), 5)])
def test_gradcheck(backend, shape, kernel_size):
    query, source, _ = _inputs(shape)
    assert torch.autograd.gradcheck(
        lambda q, s: cross_domain_filter(q, s, kernel_size, backend=backend), (query, source)
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_close_to_float64_reference(backend):
    query, source, grad = _inputs((2, 8, 12, 10), dtype=torch.float32)
    got = _forward_backward(
        lambda q, s: cross_domain_filter(q, s, 5, backend=backend), query, source, grad
    )
    q64, s64 = (t.detach().double().requires_grad_() for t in (query, source))
    want = _forward_backward(
        lambda q, s: cross_domain_filter_unfold(q, s, 5), q64, s64, grad.double()
    )
    for a, b in zip(got, want, strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4)


def _channels_last(t):
    return t.detach().contiguous(memory_format=torch.channels_last)


def _transposed_strides(t):
    return t.detach().transpose(2, 3).contiguous().transpose(2, 3)


@pytest.mark.parametrize("wanted", [0, 1])
@pytest.mark.parametrize(
    "layouts",
    [(_channels_last, _transposed_strides), (_transposed_strides, _channels_last)],
    ids=["query_channels_last", "source_channels_last"],
)
def test_cpu_backend_one_input_grad_and_memory_formats(wanted, layouts):
    query, source, grad = _inputs((1, 3, 7, 6))
    inputs = [layout(t) for layout, t in zip(layouts, (query, source), strict=True)]
    inputs[wanted].requires_grad_()  # only one input needs a gradient
    out = cross_domain_filter(*inputs, 3, backend="cpu")
    (got,) = torch.autograd.grad(out, (inputs[wanted],), grad)
    want = _forward_backward(lambda q, s: cross_domain_filter_unfold(q, s, 3), query, source, grad)
    torch.testing.assert_close(out, want[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(got, want[1 + wanted], rtol=0, atol=1e-10)
    # results come in their input's memory format (channels-last or plain contiguous)
    for result, index in ((out, 1), (got, wanted)):
        fmt = torch.channels_last if layouts[index] is _channels_last else torch.contiguous_format
        assert result.is_contiguous(memory_format=fmt)


def test_auto_backend_on_cpu_is_the_numba_one():
    query, source, _ = _inputs((1, 2, 5, 5))
    torch.testing.assert_close(
        cross_domain_filter(query, source, 3),
        cross_domain_filter(query, source, 3, backend="cpu"),
        rtol=0,
        atol=0,
    )


def test_cpu_backend_half_precision_runs_in_float32():
    query, source, _ = _inputs((1, 2, 5, 4), dtype=torch.bfloat16)
    out = cross_domain_filter(query, source, 3, backend="cpu")
    out.float().sum().backward()
    assert out.dtype == query.grad.dtype == source.grad.dtype == torch.bfloat16
    want = cross_domain_filter_unfold(query.detach().double(), source.detach().double(), 3)
    torch.testing.assert_close(out.double(), want, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize(
    ("query_shape", "source_shape", "kernel_size", "message"),
    [
        ((1, 2, 4, 4), (1, 3, 4, 4), 3, "one shape"),
        ((2, 4, 4), (2, 4, 4), 3, "one shape"),
        ((1, 2, 4, 4), (1, 2, 4, 4), 4, "odd"),
        ((1, 2, 4, 4), (1, 2, 4, 4), 0, "odd"),
    ],
)
def test_invalid_arguments(query_shape, source_shape, kernel_size, message):
    with pytest.raises(ValueError, match=message):
        cross_domain_filter(torch.zeros(query_shape), torch.zeros(source_shape), kernel_size)


def test_mixed_dtypes_rejected():
    with pytest.raises(ValueError, match="dtype"):
        cross_domain_filter(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2).double(), 3)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend"):
        cross_domain_filter(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), 3, backend="gpu")


def _cpu_filter(query, source):
    return cross_domain_filter(query, source, 3, backend="cpu")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_cpu_backend_in_a_process_forked_after_it_ran():
    # GNU OpenMP cannot run in a child forked after its threads started; the kernels must fall
    # back to their single-threaded twins there instead of aborting the child.
    query, source, _ = _inputs((1, 2, 6, 5))
    want = _cpu_filter(query, source)  # starts numba's thread pool in this process
    with multiprocessing.get_context("fork").Pool(1) as pool:
        # a child that aborts would leave the pool waiting forever: bound the wait
        got = pool.apply_async(_cpu_filter, (query.detach(), source.detach())).get(timeout=120)
    torch.testing.assert_close(got, want.detach(), rtol=0, atol=1e-12)


def test_cpu_backend_rejects_other_devices():
    meta = torch.empty(1, 1, 2, 2, device="meta")
    with pytest.raises(ValueError, match="CPU tensors"):
        cross_domain_filter(meta, meta, 3, backend="cpu")

"""The Triton backend agrees with the ``F.unfold`` definition, forward and backward.

Without a GPU the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``: every program is
executed with numpy on CPU tensors), on small shapes because it is slow. With a GPU (and
``TRITON_INTERPRET`` not set to 1) the same tests run the compiled kernels on CUDA tensors.

How interpreter mode is made to take effect: Triton reads ``TRITON_INTERPRET`` whenever a
function is decorated with ``triton.jit``, and the interpreter needs *every* jitted function to
be an interpreted one: ours (decorated when :mod:`mmsr_geo.ops._triton_kernels` is imported) and
those of ``triton.language`` itself (``tl.zeros``, ``tl.sum``, ... are jitted too, decorated when
triton is first imported). Importing torch first does not matter (it does not import triton),
so this module sets the variable before it imports triton, then imports the kernels module and
reloads it if it was imported earlier in the other mode. Pytest imports every test module
before it runs any test, so this holds in a full test run too. Should triton have been imported
before this module all the same (a plugin, a conftest), ``triton.language`` is compiled-mode for
good in this process: then the in-process tests skip and one test reruns this file in a fresh
pytest process with the variable set. The variable stays set for the rest of the session, which
only happens on machines without a GPU, where compiled kernels could not run anyway.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
triton = pytest.importorskip("triton", reason="the triton backend needs Triton installed")

import mmsr_geo  # noqa: E402
from mmsr_geo import ops  # noqa: E402
from mmsr_geo.ops import (  # noqa: E402
    _triton_kernels,
    cross_domain_filter,
    cross_domain_filter_unfold,
    triton_filter,
)

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
if _triton_kernels.INTERPRETED != INTERPRET:
    importlib.reload(_triton_kernels)
# False if triton.language was imported in compiled mode before the variable was set.
IN_PROCESS = not INTERPRET or not isinstance(triton.language.zeros, triton.runtime.JITFunction)
_CHILD = "MMSR_TRITON_TESTS_IN_CHILD"

DEVICE = "cpu" if INTERPRET else "cuda"
KERNEL_SIZES = [1, 3, 5, 11, 15]
# (B, C, H, W): batch 2, channel counts that are not powers of two, images smaller than the
# kernel (1 x 2 with k = 15), one-pixel rows/columns, more pixels than one program's block
# (6 x 7 at C = 64: blocks of 32 pixels; also test_several_pixel_blocks).
SHAPES = [(2, 3, 6, 7), (1, 5, 1, 2), (1, 1, 9, 1), (1, 64, 6, 7)]


@pytest.fixture(autouse=True)
def _skip_when_triton_was_imported_first(request):
    if not IN_PROCESS and request.function is not test_in_a_fresh_process:
        pytest.skip("triton was imported before TRITON_INTERPRET=1: see test_in_a_fresh_process")


@pytest.mark.skipif(IN_PROCESS, reason="the tests ran in this process")
def test_in_a_fresh_process():
    if os.environ.get(_CHILD):
        pytest.fail("triton is imported before this module even in a fresh pytest process")
    package_root = str(Path(mmsr_geo.__file__).resolve().parents[1])
    env = {
        **os.environ,
        _CHILD: "1",
        "TRITON_INTERPRET": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "pytest", __file__, "-q", "-n", "0", "-p", "no:cacheprovider"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]


def _inputs(shape, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    query, source, grad = (torch.randn(shape, generator=gen).to(DEVICE, dtype) for _ in range(3))
    return query.requires_grad_(), source.requires_grad_(), grad


def _forward_backward(fn, query, source, grad):
    out = fn(query, source)
    grad_query, grad_source = torch.autograd.grad(out, (query, source), grad)
    return out, grad_query, grad_source


def _reference(query, source, grad, kernel_size):
    """Output and gradients of the unfold definition, in float64 on the CPU."""
    q, s = (t.detach().cpu().double().requires_grad_() for t in (query, source))
    return _forward_backward(
        lambda q, s: cross_domain_filter_unfold(q, s, kernel_size), q, s, grad.cpu().double()
    )


def _triton(kernel_size):
    return lambda q, s: cross_domain_filter(q, s, kernel_size, backend="triton")


def _assert_matches(got, want, rtol, atol, names=("output", "grad query", "grad source")):
    """Elementwise ``rtol``, plus ``atol`` times the reference's largest magnitude: float32
    logits of C products make the absolute error scale with the values (the float32 offset loop
    is off by as much)."""
    for name, a, b in zip(names, got, want, strict=True):
        scale = b.abs().max().item()
        torch.testing.assert_close(a.cpu().double(), b, rtol=rtol, atol=atol * scale, msg=name)


@pytest.mark.parametrize("kernel_size", KERNEL_SIZES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_unfold_reference_float32(kernel_size, shape):
    query, source, grad = _inputs(shape, seed=kernel_size)
    got = _forward_backward(_triton(kernel_size), query, source, grad)
    for t in got:
        assert t.shape == shape and t.dtype == torch.float32 and t.device.type == DEVICE
    _assert_matches(got, _reference(query, source, grad, kernel_size), rtol=1e-4, atol=1e-4)


def test_several_pixel_blocks():
    query, source, grad = _inputs((1, 3, 20, 13), seed=1)
    got = _forward_backward(_triton(3), query, source, grad)
    _assert_matches(got, _reference(query, source, grad, 3), rtol=1e-4, atol=1e-4)


def test_large_logits_do_not_overflow():
    # Logits of several hundred: exp would overflow without the running max, and the nearly
    # one-hot softmax punishes a query gradient formed as a difference of two large terms.
    query, source, grad = _inputs((1, 8, 5, 6), seed=2)
    query, source = (t.detach().mul(8).requires_grad_() for t in (query, source))
    got = _forward_backward(_triton(5), query, source, grad)
    assert all(torch.isfinite(t).all() for t in got)
    _assert_matches(got, _reference(query, source, grad, 5), rtol=1e-4, atol=1e-4)


def _channels_last(t):
    return t.detach().contiguous(memory_format=torch.channels_last)


def _transposed_strides(t):
    return t.detach().transpose(2, 3).contiguous().transpose(2, 3)


def _contiguous(t):
    return t.detach().contiguous()


@pytest.mark.parametrize(
    "layouts",
    [
        (_channels_last, _channels_last),
        (_transposed_strides, _channels_last),
        (_channels_last, _contiguous),
        (_transposed_strides, _transposed_strides),
    ],
    ids=["both_channels_last", "source_channels_last", "query_channels_last", "neither"],
)
def test_memory_formats(layouts):
    query, source, grad = _inputs((2, 5, 4, 6), seed=3)
    query, source = (
        layout(t).requires_grad_() for layout, t in zip(layouts, (query, source), strict=True)
    )
    got = _forward_backward(_triton(3), query, source, grad)
    _assert_matches(got, _reference(query, source, grad, 3), rtol=1e-4, atol=1e-4)
    # output and gradients come in the source's memory format (plain contiguous if not
    # channels-last)
    fmt = torch.channels_last if layouts[1] is _channels_last else torch.contiguous_format
    assert all(t.is_contiguous(memory_format=fmt) for t in got)


@pytest.mark.parametrize("wanted", [0, 1], ids=["query", "source"])
def test_one_input_gradient(wanted):
    query, source, grad = _inputs((1, 3, 5, 4), seed=4)
    inputs = [query.detach(), source.detach()]
    inputs[wanted].requires_grad_()
    out = cross_domain_filter(*inputs, 5, backend="triton")
    (got,) = torch.autograd.grad(out, (inputs[wanted],), grad)
    want = _reference(query, source, grad, 5)
    names = ("output", ("grad query", "grad source")[wanted])
    _assert_matches((out, got), (want[0], want[1 + wanted]), rtol=1e-4, atol=1e-4, names=names)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_runs_in_float32(dtype):
    query, source, grad = _inputs((2, 6, 5, 4), dtype=dtype, seed=5)
    got = _forward_backward(_triton(3), query, source, grad)
    assert all(t.dtype == dtype for t in got)
    # Inputs already rounded to dtype: the remaining error is the rounding of the results (and,
    # in the backward, of the saved output). Triton's interpreter truncates float32 -> bfloat16
    # where a GPU rounds to nearest, so it is up to one bfloat16 ulp (4e-3) off, not half.
    _assert_matches(got, _reference(query, source, grad, 3), rtol=2e-2, atol=1e-2)


def test_backward_is_deterministic():
    query, source, grad = _inputs((1, 4, 6, 5), seed=6)
    first = _forward_backward(_triton(5), query, source, grad)
    second = _forward_backward(_triton(5), query, source, grad)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("shape", "dtype", "message"),
    [((1, 2, 3, 3), torch.float64, "float64"), ((1, 129, 2, 2), torch.float32, "128 channels")],
)
def test_unsupported_inputs_rejected(shape, dtype, message):
    query = torch.zeros(shape, dtype=dtype, device=DEVICE)
    assert not triton_filter.supports(query, query)
    with pytest.raises(ValueError, match=message):
        cross_domain_filter(query, query, 3, backend="triton")


@pytest.mark.parametrize("numba", [True, False], ids=["numba", "no_numba"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_auto_backend_never_picks_triton_for_cpu_tensors(monkeypatch, numba, dtype):
    def fail(*args):
        raise AssertionError("auto picked the triton backend for CPU tensors")

    monkeypatch.setattr(triton_filter.TritonCrossDomainFilter, "apply", fail)
    monkeypatch.setattr(ops, "_cpu_available", lambda: numba)
    query, source, _ = _inputs((1, 2, 4, 4))
    cross_domain_filter(query.detach().cpu().to(dtype), source.detach().cpu().to(dtype), 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_backend_picks_triton_for_cuda_tensors(monkeypatch):
    picked = []
    apply = triton_filter.TritonCrossDomainFilter.apply
    monkeypatch.setattr(
        triton_filter.TritonCrossDomainFilter, "apply", lambda *a: picked.append(1) or apply(*a)
    )
    query = torch.randn(1, 4, 5, 5, device="cuda")
    cross_domain_filter(query, query, 3)
    cross_domain_filter(query.double(), query.double(), 3)  # falls back to "shifted"
    assert picked == [1]


# Compiles each kernel for an H100 (sm_90) with Triton's own compiler and bundled ptxas: no GPU
# needed, and it catches what the lenient interpreter lets through. Run in a fresh process
# because this one's triton may be in interpreter mode.
_COMPILE_FOR_GPU = """
import torch, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from mmsr_geo.ops import _triton_kernels as k

ints = {n: "i32" for n in ("H", "W", "C", "stride_c", "stride_h", "stride_w")}
for dtype, channels in (("*fp32", 64), ("*bf16", 3)):
    _, meta, _ = k._launch_config(torch.empty(1, channels, 8, 8, device="meta"))
    num_warps = meta.pop("num_warps")
    for fn, ptrs, extra in (
        (k._forward_kernel, ("q", "s", "out"), {}),
        (k._query_grad_kernel, ("q", "s", "g", "out", "gq"), {"WANT_GQ": True}),
        (k._source_grad_kernel, ("q", "s", "g", "gs"), {}),
    ):
        constants = {"K": 3, **meta, **extra}
        signature = {name: "*fp32" for name in fn.arg_names if name.endswith("_ptr")}
        signature |= {f"{name}_ptr": dtype for name in ptrs}
        signature |= {**ints, "stride_b": "i64"} | {name: "constexpr" for name in constants}
        src = ASTSource(fn, {name: signature[name] for name in fn.arg_names}, constants)
        compiled = triton.compile(src, GPUTarget("cuda", 90, 32), {"num_warps": num_warps})
        assert "cubin" in compiled.asm, fn.__name__
"""


def test_kernels_compile_for_a_gpu():
    pytest.importorskip("triton.backends.nvidia", reason="needs Triton's CUDA backend")
    package_root = str(Path(mmsr_geo.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "TRITON_INTERPRET": "0",
        "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-c", _COMPILE_FOR_GPU]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]


def test_triton_available():
    assert triton_filter.triton_available()

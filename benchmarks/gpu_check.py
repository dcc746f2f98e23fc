"""The one script a session with a GPU runs: correctness, speed and quality of the GPU engine.

Stages (all by default; ``--stages`` picks some):

1. ``ops``: the fused filters (``triton``, ``shifted``; ``cpu`` on the CPU) against the
   ``F.unfold`` reference on the device, forward and both gradients, float32 tolerance.
2. ``filter``: forward + backward of the filter, C=64, 320x320, k = 11, 5, 3, per backend
   (ms, peak device memory).
3. ``fit``: one fit iteration at 320x320 (kernels 11/5, 64 features) for batches of 1, 4 and
   16 tiles, in fp32, tf32 and bf16 (ms per tile-iteration).
4. ``middlebury``: the 13 shared Middlebury pairs at x4 and x8, 1000 iterations, kernels 11/5,
   all images of a scale fitted as one batch (:func:`mmsr_geo.fit.fit_many`), per precision:
   per-image RMSE, bicubic, mean, beside the official notebook's x4 mean (1.71) and the
   paper's Table 1.
5. ``raster``: the raster-level fit's two kinds of work (issue 21): a training step of one
   network on 2, 8 and 32 crops of 96 x 96 output pixels (ms per step and per crop), and the
   trained network's forward pass over batches of 1, 4 and 16 tiles of 256 x 256 (ms per
   tile), kernels 5/3, 64 features, in the device's default precision.

It imports only torch, numpy, Pillow (and triton when present): the GPU machine's image has no
GDAL. ``--device cpu --quick`` runs every stage at toy sizes on the CPU in well under three
minutes (CI runs it), proving the script before GPU time is spent on it.

    python benchmarks/gpu_check.py --out gpu-check --write BENCHMARKS.md --data data/middlebury
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/gpu-check
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout

from mmsr_geo.degradation import bicubic_upsample, centre_crop, crop_to_multiple, pool  # noqa: E402
from mmsr_geo.fit import fit_many  # noqa: E402
from mmsr_geo.fit_config import FitConfig, resolve_precision  # noqa: E402
from mmsr_geo.jobs import is_out_of_memory  # noqa: E402
from mmsr_geo.loaders import load_middlebury_dir, middlebury_names  # noqa: E402
from mmsr_geo.metrics import rmse  # noqa: E402
from mmsr_geo.model import MMSRNet  # noqa: E402
from mmsr_geo.ops import cross_domain_filter, cross_domain_filter_unfold  # noqa: E402
from mmsr_geo.training import (  # noqa: E402
    make_optimiser,
    precision_mode,
    predict,
    training_step,
)

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "middlebury"
OPS_TOLERANCE = 1e-4
"""Largest |fused - reference| over the largest |reference| (per tensor) in float32."""
NOTEBOOK_X4_MEAN = 1.71
PAPER_TABLE_1 = {4: (1.78, 2.47, 2.30), 8: (2.63, 3.92, 3.60)}
"""MMSR's Table 1 averages on the Middlebury 2003 / 2005 / 2014 test sets (other images)."""


@dataclass
class Sizes:
    """Problem sizes: the real ones, or toy ones for ``--quick``."""

    filter_hw: int = 320
    fit_hw: int = 320
    batches: tuple[int, ...] = (1, 4, 16)
    timing_steps: int = 10
    middlebury_images: int | None = None
    middlebury_crop: int | None = None
    iterations: int = 1000
    crops_per_step: tuple[int, ...] = (2, 8, 32)
    crop_hw: int = 96
    inference_hw: int = 256
    inference_batches: tuple[int, ...] = (1, 4, 16)
    ops_shapes: tuple[tuple[int, int, int, int], ...] = (
        (2, 3, 6, 7),
        (1, 1, 2, 1),
        (1, 64, 33, 47),
        (3, 128, 17, 20),
    )


QUICK = Sizes(
    filter_hw=48,
    fit_hw=48,
    batches=(1, 2),
    timing_steps=2,
    middlebury_images=2,
    middlebury_crop=64,
    iterations=5,
    crops_per_step=(2, 4),
    crop_hw=32,
    inference_hw=48,
    inference_batches=(1, 2),
    ops_shapes=((2, 3, 6, 7), (1, 1, 2, 1), (1, 16, 9, 11)),
)


@dataclass
class Report:
    """Everything measured, as data (written to JSON) and as Markdown tables."""

    device: str
    machine: str
    sections: dict[str, Any] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.log.append(line)


def _machine(device: torch.device) -> str:
    try:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from _report import machine_description

        text = machine_description()
    except Exception as exc:  # the description is a courtesy; never fail the check for it
        text = f"(machine description failed: {exc})"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        text = (
            f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA "
            f"{torch.version.cuda}, torch {torch.__version__}; host: {text}"
        )
    return text


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device, runs: int) -> float:
    """Median seconds of ``runs`` calls after one warm-up."""
    fn()
    _sync(device)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak_mib(fn: Callable[[], Any], device: torch.device) -> float | None:
    """Peak device memory above what was allocated before ``fn`` (CUDA only)."""
    if device.type != "cuda":
        return None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    _sync(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def _backends(device: torch.device) -> list[str]:
    if device.type == "cuda":
        from mmsr_geo.ops.triton_filter import triton_available

        return (["triton"] if triton_available() else []) + ["shifted"]
    return ["cpu", "shifted"]


# --- 1. ops ------------------------------------------------------------------------------


def check_ops(report: Report, device: torch.device, sizes: Sizes) -> bool:
    """Fused filters vs the unfold reference (float64 reference, float32 fused)."""
    rows, ok = [], True
    for backend in _backends(device):
        for shape in sizes.ops_shapes:
            for k in (1, 3, 5, 11, 15):
                gen = torch.Generator().manual_seed(k)
                tensors = [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in "qsg"]
                q64, s64, g64 = (t.to(device) for t in tensors)
                want = _filter_and_grads(
                    functools.partial(cross_domain_filter_unfold, kernel_size=k),
                    q64, s64, g64, torch.float64,
                )
                got = _filter_and_grads(
                    functools.partial(cross_domain_filter, kernel_size=k, backend=backend),
                    q64, s64, g64, torch.float32,
                )
                errors = [
                    float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
                    for a, b in zip(got, want, strict=True)
                ]
                passed = max(errors) <= OPS_TOLERANCE
                ok &= passed
                rows.append([backend, "x".join(map(str, shape)), k, *errors, passed])
    report.sections["ops"] = {
        "columns": ["backend", "shape", "k", "out", "grad query", "grad source", "pass"],
        "rows": rows,
    }
    failed = [r for r in rows if not r[-1]]
    report.say(f"ops: {len(rows) - len(failed)}/{len(rows)} checks within float32 tolerance")
    for row in failed:
        report.say(f"  FAILED {row}")
    return ok


def _filter_and_grads(fn, query, source, grad, dtype) -> list[torch.Tensor]:
    """Output and both gradients of ``fn(query, source)`` computed in ``dtype``, as float64."""
    q = query.to(dtype).requires_grad_()
    s = source.to(dtype).requires_grad_()
    out = fn(q, s)
    grad_q, grad_s = torch.autograd.grad(out, (q, s), grad.to(dtype))
    return [t.detach().double() for t in (out, grad_q, grad_s)]


# --- 2. filter timing --------------------------------------------------------------------


def time_filter(report: Report, device: torch.device, sizes: Sizes) -> None:
    hw, channels = sizes.filter_hw, 64
    rows = []
    for k in (11, 5, 3):
        gen = torch.Generator().manual_seed(0)
        inputs = [
            torch.randn((1, channels, hw, hw), generator=gen).to(device)
            .contiguous(memory_format=torch.channels_last)
            for _ in range(3)
        ]
        timings: dict[str, tuple[float, float | None]] = {}
        for backend in [*_backends(device), "unfold"]:
            query = inputs[0].clone().requires_grad_()
            source = inputs[1].clone().requires_grad_()

            def step(b=backend, q=query, s=source, k=k, grad=inputs[2]):
                out = cross_domain_filter(q, s, k, backend=b)
                torch.autograd.grad(out, (q, s), grad)

            try:
                seconds = _timed(step, device, 5 if device.type == "cuda" else 2)
                timings[backend] = (seconds, _peak_mib(step, device))
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                timings[backend] = (float("nan"), None)
                _release(device)
        base = timings.get("shifted", (float("nan"), None))[0]
        for backend, (seconds, mib) in timings.items():
            rows.append([k, backend, seconds * 1e3, mib, base / seconds if seconds else None])
            report.say(
                f"filter k={k} {backend}: {seconds * 1e3:.2f} ms"
                + (f", {mib:.0f} MiB" if mib is not None else "")
            )
    report.sections["filter"] = {
        "title": f"filter forward+backward, C={channels}, {hw}x{hw}",
        "columns": ["k", "backend", "ms", "peak MiB", "speed-up vs shifted"],
        "rows": rows,
    }


def _release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --- 3. fit iteration timing -------------------------------------------------------------


def time_fit(report: Report, device: torch.device, sizes: Sizes) -> None:
    hw, scale = sizes.fit_hw, 4
    precisions = ("fp32", "tf32", "bf16") if device.type == "cuda" else ("fp32", "bf16")
    config = FitConfig.from_preset("depth", device=str(device))
    rows = []
    for batch in sizes.batches:
        for precision in precisions:
            try:
                ms = _fit_iteration_ms(config, batch, hw, scale, precision, device, sizes)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                _release(device)
                report.say(f"fit {hw}x{hw} batch {batch} {precision}: out of memory")
                rows.append([batch, precision, None, None])
                continue
            per_tile = ms / batch
            rows.append([batch, precision, ms, per_tile])
            report.say(
                f"fit {hw}x{hw} batch {batch} {precision}: {ms:.1f} ms per step, "
                f"{per_tile:.1f} ms per tile-iteration ({per_tile:.2f} s per tile at 1000 its)"
            )
    report.sections["fit"] = {
        "title": f"one fit iteration, {hw}x{hw} output tiles (x{scale}), kernels 11/5, 64 features",
        "columns": ["tiles per batch", "precision", "ms per step", "ms per tile-iteration"],
        "rows": rows,
    }


def _fit_iteration_ms(config, batch, hw, scale, precision, device, sizes) -> float:
    gen = torch.Generator().manual_seed(batch)
    lr = torch.randn((batch, 1, hw // scale, hw // scale), generator=gen).to(device)
    guide = torch.randn((batch, 3, hw, hw), generator=gen).to(device)
    layout = torch.channels_last if batch == 1 else torch.contiguous_format
    guide = guide.contiguous(memory_format=layout)
    weight = torch.ones_like(lr)
    n_valid = weight.sum(dim=(1, 2, 3))
    networks = [MMSRNet(3, config.s2g_kernel, config.g2s_kernel, 64) for _ in range(batch)]
    model = networks[0] if batch == 1 else MMSRNet.stacked(networks)
    model = model.to(device=device, memory_format=layout)
    optimiser, _ = make_optimiser(model, config)
    with precision_mode(precision, device):
        seconds = _timed(
            lambda: training_step(model, optimiser, lr, guide, weight, n_valid, scale, precision),
            device,
            sizes.timing_steps,
        )
    return seconds * 1e3


# --- 5. raster-level fit: training steps on many crops, batched forward passes ------------


def time_raster(report: Report, device: torch.device, sizes: Sizes) -> None:
    scale, precision = 4, resolve_precision("auto", device)
    config = FitConfig(device=str(device))
    gen = torch.Generator().manual_seed(0)
    model = MMSRNet(3, config.s2g_kernel, config.g2s_kernel, config.features).to(device)
    optimiser, _ = make_optimiser(model, config)
    rows = []
    hw = sizes.crop_hw
    for crops in sizes.crops_per_step:
        lr = torch.randn((crops, 1, hw // scale, hw // scale), generator=gen).to(device)
        guide = torch.randn((crops, 3, hw, hw), generator=gen).to(device)
        weight = torch.ones_like(lr)
        n_valid = weight.sum(dim=(1, 2, 3))
        with precision_mode(precision, device):
            seconds = _timed(
                lambda lr=lr, guide=guide, weight=weight, n_valid=n_valid: training_step(
                    model, optimiser, lr, guide, weight, n_valid, scale, precision,
                    reduction="mean",
                ),
                device,
                sizes.timing_steps,
            )
        rows.append(["training step", crops, f"{hw}x{hw}", seconds * 1e3, seconds * 1e3 / crops])
        report.say(f"raster training step, {crops} crops of {hw}x{hw}: {seconds * 1e3:.1f} ms")
    model.eval()
    hw = sizes.inference_hw
    for batch in sizes.inference_batches:
        lr = torch.randn((batch, 1, hw // scale, hw // scale), generator=gen).to(device)
        guide = torch.randn((batch, 3, hw, hw), generator=gen).to(device)
        try:
            with precision_mode(precision, device):
                seconds = _timed(
                    lambda lr=lr, guide=guide: predict(model, lr, guide, None, precision),
                    device,
                    sizes.timing_steps,
                )
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            _release(device)
            rows.append(["forward pass", batch, f"{hw}x{hw}", None, None])
            continue
        rows.append(["forward pass", batch, f"{hw}x{hw}", seconds * 1e3, seconds * 1e3 / batch])
        report.say(f"raster forward pass, {batch} tiles of {hw}x{hw}: {seconds * 1e3:.1f} ms")
    report.sections["raster"] = {
        "title": f"raster-level fit (x{scale}, kernels 5/3, 64 features, {precision}): "
        "training steps on crops, forward passes over tiles",
        "columns": ["work", "crops / tiles", "size", "ms", "ms per crop or tile"],
        "rows": rows,
    }


# --- 4. Middlebury -----------------------------------------------------------------------


def middlebury(
    report: Report, device: torch.device, sizes: Sizes, data: Path, precisions: list[str]
) -> None:
    if not data.is_dir():
        report.say(f"middlebury: {data} not found: stage skipped")
        return
    names = middlebury_names(data)[: sizes.middlebury_images]
    images = []
    for name, reference, guide in load_middlebury_dir(data, names):
        if sizes.middlebury_crop:
            reference, guide = centre_crop(reference, guide, sizes.middlebury_crop)
        images.append((name, reference, guide))
    results: dict[str, Any] = {}
    for precision in precisions:
        for scale in (4, 8):
            config = FitConfig.from_preset(
                "depth", iterations=sizes.iterations, device=str(device), precision=precision
            )
            started = time.perf_counter()
            scores = _middlebury_scale(images, scale, config)
            seconds = time.perf_counter() - started
            mean = float(np.mean([s["rmse"] for s in scores]))
            bicubic = float(np.mean([s["bicubic"] for s in scores]))
            results[f"{precision} x{scale}"] = {
                "images": scores,
                "mean": mean,
                "bicubic": bicubic,
                "seconds": seconds,
            }
            report.say(
                f"middlebury {precision} x{scale}: mean RMSE {mean:.3f} (bicubic {bicubic:.3f}) "
                f"over {len(scores)} images in {seconds:.1f} s"
            )
    report.sections["middlebury"] = {
        "iterations": sizes.iterations,
        "crop": sizes.middlebury_crop,
        "results": results,
    }


def _middlebury_scale(images, scale: int, config: FitConfig) -> list[dict[str, Any]]:
    """Every image at one scale, fitted as one batch (halved while the device runs out of
    memory); per-image RMSE against the target and bicubic's."""
    references = [crop_to_multiple(ref, scale) for _, ref, _ in images]
    guides = [crop_to_multiple(g, scale) for _, _, g in images]
    sources = [pool(ref, scale) for ref in references]
    predictions = _fit_in_batches(sources, guides, scale, config, len(images))
    return [
        {
            "name": name,
            "rmse": rmse(prediction, reference),
            "bicubic": rmse(bicubic_upsample(source, scale), reference),
        }
        for (name, _, _), reference, source, prediction in zip(
            images, references, sources, predictions, strict=True
        )
    ]


def _fit_in_batches(sources, guides, scale, config, batch: int) -> list[np.ndarray]:
    predictions: list[np.ndarray] = []
    start = 0
    while start < len(sources):
        chunk = slice(start, start + batch)
        try:
            results = fit_many(sources[chunk], guides[chunk], scale, config)
        except Exception as exc:
            if not is_out_of_memory(exc) or batch == 1:
                raise
            torch.cuda.empty_cache()
            batch = max(1, batch // 2)
            continue
        predictions.extend(r.prediction.astype(np.float64) for r in results)
        start += len(results)
    return predictions


# --- output -------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "**NO**"
    if isinstance(value, float):
        if value != value:
            return "-"
        return f"{value:.3g}" if abs(value) < 0.01 else f"{value:.2f}"
    return str(value)


def _table(columns: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(report: Report, quick: bool) -> str:
    parts = [
        "## GPU engine check (`benchmarks/gpu_check.py`)",
        "",
        f"Device: {report.device}. Machine: {report.machine}."
        + (" **Quick mode: toy sizes, not a measurement.**" if quick else ""),
    ]
    ops = report.sections.get("ops")
    if ops:
        failed = [r for r in ops["rows"] if not r[-1]]
        shapes = ", ".join(dict.fromkeys(r[1] for r in ops["rows"]))
        parts += [
            "",
            f"Fused filters vs the unfold reference on the device (float32 vs a float64 "
            f"reference; max |difference| / max |reference| of the output and both gradients, "
            f"tolerance {OPS_TOLERANCE:g}, k = 1 to 15, shapes {shapes}): "
            f"{len(ops['rows']) - len(failed)}/{len(ops['rows'])} checks pass.",
        ]
        if failed:
            parts += ["", _table(ops["columns"], failed)]
    for key in ("filter", "fit", "raster"):
        section = report.sections.get(key)
        if section:
            parts += ["", f"{section['title']}:", "", _table(section["columns"], section["rows"])]
    mb = report.sections.get("middlebury")
    if mb and mb["results"]:
        parts += [
            "",
            f"Middlebury (shared pairs, LR = average pooling, RMSE in 0-255 over the full "
            f"image{', centre crops of ' + str(mb['crop']) if mb['crop'] else ''}), kernels "
            f"11/5, {mb['iterations']} iterations, all images of a scale fitted as one batch:",
            "",
        ]
        keys = list(mb["results"])
        names = [s["name"] for s in mb["results"][keys[0]]["images"]]
        columns = ["image", *[f"{k} MMSR" for k in keys], "x4 bicubic", "x8 bicubic"]
        rows = []
        for i, name in enumerate(names):
            row = [name, *[mb["results"][k]["images"][i]["rmse"] for k in keys]]
            row += [_bicubic(mb, 4, i), _bicubic(mb, 8, i)]
            rows.append(row)
        rows.append(
            ["**mean**", *[mb["results"][k]["mean"] for k in keys], _bicubic(mb, 4),
             _bicubic(mb, 8)]
        )
        rows.append(["seconds (whole batch)", *[mb["results"][k]["seconds"] for k in keys], "", ""])
        parts += [_table(columns, rows)]
        parts += [
            "",
            f"Reference: the official MMSR notebook's x4 mean on these 13 images, 1000 "
            f"iterations: **{NOTEBOOK_X4_MEAN}**. The paper's Table 1 (other Middlebury test "
            f"sets, 2003 / 2005 / 2014): x4 {' / '.join(map(str, PAPER_TABLE_1[4]))}, x8 "
            f"{' / '.join(map(str, PAPER_TABLE_1[8]))}.",
        ]
    return "\n".join(parts)


def _bicubic(mb: dict[str, Any], scale: int, index: int | None = None) -> float | None:
    for key, result in mb["results"].items():
        if key.endswith(f"x{scale}"):
            return result["bicubic"] if index is None else result["images"][index]["bicubic"]
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="toy sizes (CI, a dry run)")
    parser.add_argument("--out", type=Path, default=Path("gpu-check"))
    parser.add_argument("--write", type=Path, help="also write the section into this file")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--stages", default="ops,filter,fit,raster,middlebury")
    parser.add_argument(
        "--precisions",
        help="Middlebury precisions, comma-separated [default: tf32,fp32,bf16 on CUDA, fp32 "
        "on the CPU]",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    sizes = QUICK if args.quick else Sizes()
    precisions = (args.precisions or ("tf32,fp32,bf16" if device.type == "cuda" else "fp32"))
    args.out.mkdir(parents=True, exist_ok=True)
    report = Report(device=str(device), machine=_machine(device))
    report.say(f"gpu_check on {report.machine}")
    stages = args.stages.split(",")
    ok = True
    steps = {
        "ops": lambda: check_ops(report, device, sizes),
        "filter": lambda: time_filter(report, device, sizes),
        "fit": lambda: time_fit(report, device, sizes),
        "raster": lambda: time_raster(report, device, sizes),
        "middlebury": lambda: middlebury(
            report, device, sizes, args.data, [resolve_precision(p, device) for p in
                                               precisions.split(",")]
        ),
    }
    for stage in stages:
        started = time.perf_counter()
        try:
            if steps[stage]() is False:
                ok = False
        except Exception:
            ok = False
            report.say(f"{stage}: FAILED\n{traceback.format_exc()}")
        report.say(f"{stage}: {time.perf_counter() - started:.1f} s")
        _save(report, args, sizes)
    if args.write:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from _report import write_section

        write_section(args.write, "gpu_check", markdown(report, args.quick))
    return 0 if ok else 1


def _save(report: Report, args: argparse.Namespace, sizes: Sizes) -> None:
    """Everything so far, after every stage: a run cut short still leaves its figures."""
    (args.out / "gpu_check.json").write_text(
        json.dumps(
            {"device": report.device, "machine": report.machine, "sizes": sizes.__dict__,
             "sections": report.sections},
            indent=1,
            default=str,
        )
    )
    (args.out / "gpu_check.log").write_text("\n".join(report.log) + "\n")
    (args.out / "gpu_check.md").write_text(markdown(report, args.quick) + "\n")


if __name__ == "__main__":
    sys.exit(main())

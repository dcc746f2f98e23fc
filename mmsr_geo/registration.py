"""How far the guide's content is displaced from the source's, found from the data alone.

A DEM and an orthophoto from different flights or providers are rarely registered to the
pixel, and MMSR copies edges from the guide: an offset guide puts them in the wrong place. The
offset is found by cross-modal structure matching on the LR grid: the guide, moved by a
candidate shift and average-pooled by the scale, is predicted from the LR source's local
structure (height, its x and y gradients, slope magnitude, height squared) by least squares,
band by band, for its values and for its gradient magnitude. The shift that explains most of
the guide's variance is the offset. Shading on terrain is linear in the gradients, land cover
follows height, and depth edges are guide edges, so one score serves DEMs, DSMs and depth
maps. Integer output-pixel shifts are scored exactly (box sums of an integral image); a
parabola through the best one and its neighbours gives the sub-pixel part.

An estimate is trusted only when the guide shares enough structure with the source, the best
shift lies inside the search and stands out from shifts a source pixel away, and the four
halves of the image (left, right, top, bottom) agree on it; otherwise the guide is used as
given and :attr:`Registration.reason` says why.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

REGISTER_MODES = ("auto", "off")
"""``auto``: estimate the guide's offset and correct it when the estimate is trusted;
``off``: use the guide as given."""

MIN_SHARED_STRUCTURE = 0.15
"""Least fraction of the guide's variance the source's structure must explain at the best
shift for the estimate to be trusted (flat or unrelated content explains less)."""

MIN_DISTINCTNESS = 0.08
"""Least margin of the best shift over the best one more than a source pixel away, as a
fraction of the best score's height above the median: repeating or one-directional structure
(a straight cliff, a checkerboard of fields) scores far shifts almost as well."""

MIN_APPLIED_SHIFT = 0.5
"""Offsets below this many *source* pixels are reported but not corrected. Measured (README,
BENCHMARKS.md "misregistration"): moving aligned guides back by their own estimated 0.16-0.37
source pixels changed the fit by -1.0 to +1.1 %, within fit noise, and guides left displaced
by up to 0.6 source pixels cost at most 4 %; beyond a source pixel correcting gains 8-19 %."""


@dataclass(frozen=True)
class Registration:
    """The estimated displacement of the guide's content relative to the source.

    ``dx`` and ``dy`` are in output pixels along the grid's columns and rows: the guide shows
    at column ``c + dx`` what the source has at column ``c``. Correcting moves it back.
    """

    dx: float
    dy: float
    score: float
    """Fraction of the guide's (pooled) variance the source explains at the estimate."""
    score_at_zero: float
    """The same at no shift."""
    spread: float
    """Largest distance (output pixels) between the estimate and that of an image half."""
    applied: bool
    """Whether the guide is corrected by this estimate."""
    reason: str
    """Why it is or is not applied, in words for the log."""
    seconds: float = 0.0
    """Time the estimate took."""

    @property
    def shift(self) -> float:
        """Length of the displacement, output pixels."""
        return float(np.hypot(self.dx, self.dy))

    @property
    def correction(self) -> tuple[int, int]:
        """Whole output pixels (columns, rows) the guide's reads are moved by: the estimate
        rounded, so the guide is copied, not resampled again (a sub-pixel move blurs it), and
        at most half an output pixel remains; (0, 0) when not applied."""
        return (round(self.dx), round(self.dy)) if self.applied else (0, 0)

    def as_dict(
        self, pixel_metres: tuple[float, float] | None = None
    ) -> dict[str, float | bool | str | None]:
        """Plain JSON values (a spread that could not be measured is None); with the output
        pixel's ``(y, x)`` size in metres, the offset in metres too (``dx_metres``,
        ``dy_metres``, along columns and rows)."""
        record = {k: None if isinstance(v, float) and not np.isfinite(v) else v
                  for k, v in asdict(self).items()}
        if pixel_metres is not None:
            record["dx_metres"] = self.dx * pixel_metres[1]
            record["dy_metres"] = self.dy * pixel_metres[0]
        return record


NO_REGISTRATION = Registration(0.0, 0.0, 0.0, 0.0, 0.0, False, "registration off")


def default_max_shift(scale: int) -> int:
    """Search radius (output pixels): three source pixels, at least 12 output pixels."""
    return max(12, 3 * scale)


def estimate_offset(
    source: np.ndarray,
    guide: np.ndarray,
    scale: int,
    *,
    valid: np.ndarray | None = None,
    max_shift: int | None = None,
) -> Registration:
    """Estimate how far the (C, H, W) HR guide's content is displaced from the (h, w) source.

    Args:
        source: LR source values (invalid pixels filled).
        guide: HR guide on the output grid, ``H = h * scale``, ``W = w * scale``.
        scale: the integer factor between them.
        valid: (h, w) bool, LR pixels whose source and guide are both data.
        max_shift: search radius in output pixels (default :func:`default_max_shift`).
    """
    started = time.perf_counter()
    radius = default_max_shift(scale) if max_shift is None else int(max_shift)
    source = np.asarray(source, dtype=np.float64)
    h, w = source.shape
    margin = -(-radius // scale)  # blocks whose every shift reads inside the guide
    if h <= 2 * margin + 4 or w <= 2 * margin + 4:
        return untrusted(f"the source is too small ({w}x{h} pixels) to register the guide")
    inner = np.ones((h, w), dtype=bool) if valid is None else np.array(valid, dtype=bool)
    inner[:margin] = inner[-margin:] = False
    inner[:, :margin] = inner[:, -margin:] = False
    if inner.sum() < 64:
        return untrusted("too few valid source pixels to register the guide")
    sums = _target_integrals(guide, radius)
    features = _source_features(source)

    regions = [inner, *_halves(inner)]
    scores = _shift_scores(features, sums, regions, scale, radius, (h, w))
    dx, dy, best = _peak(scores[0])
    at_zero = float(scores[0, radius, radius])
    spread = max(
        (float(np.hypot(hx - dx, hy - dy)) for hx, hy, _ in map(_peak, scores[1:])),
        default=float("inf"),
    )
    if best < MIN_SHARED_STRUCTURE:
        applied, reason = False, (
            f"the source explains only {100 * best:.0f} % of the guide's variance at any shift "
            "(too little shared structure): the guide is used as given"
        )
    elif max(abs(dx), abs(dy)) > radius - 1:
        applied, reason = False, (
            f"the best match lies at the edge of the search ({radius} output pixels): the "
            "offset may be larger, or there is none; the guide is used as given"
        )
    elif _distinctness(scores[0], scale) < MIN_DISTINCTNESS:
        applied, reason = False, (
            "shifts more than a source pixel apart match almost as well (repeating or "
            "one-directional structure): the guide is used as given"
        )
    elif spread > max(0.5, scale / 4):
        applied, reason = False, (
            f"the image halves disagree on the offset by up to {spread:.2f} output pixels: "
            "the guide is used as given"
        )
    elif np.hypot(dx, dy) < MIN_APPLIED_SHIFT * scale:
        applied, reason = False, (
            f"the offset is under {MIN_APPLIED_SHIFT:g} source pixel, too small to be worth "
            "moving the guide: it is used as given"
        )
    else:
        applied, reason = True, (
            f"the guide is moved back by {round(dx):+d}, {round(dy):+d} output pixels (the "
            "estimate in whole pixels)"
        )
    return Registration(
        float(dx), float(dy), float(best), at_zero, spread, applied, reason,
        time.perf_counter() - started,
    )


def register_guide(
    source: np.ndarray,
    guide: np.ndarray,
    scale: int,
    mode: str = "auto",
    *,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, Registration]:
    """The (C, H, W) guide moved back by its estimated offset when ``mode`` is ``auto`` and
    the estimate is trusted (else as given), and the estimate."""
    if mode == "off":
        return guide, NO_REGISTRATION
    found = estimate_offset(source, guide, scale, valid=valid)
    if not found.applied:
        return guide, found
    return move_whole(guide, *found.correction), found


def untrusted(reason: str) -> Registration:
    """No estimate could be made (``reason`` says why): nothing is corrected."""
    return Registration(0.0, 0.0, 0.0, 0.0, float("inf"), False, reason)


def _standardised(values: np.ndarray) -> np.ndarray:
    spread = values.std()
    return (values - values.mean()) / (spread if spread > 0 else 1.0)


def _source_features(source: np.ndarray) -> np.ndarray:
    """(5, h, w): height, its gradients, slope magnitude and height squared, standardised."""
    z = _standardised(source)
    gy, gx = np.gradient(z)
    slope = np.hypot(gx, gy)
    return np.stack([_standardised(f) for f in (z, gx, gy, slope, z * z)])


def _target_integrals(guide: np.ndarray, radius: int) -> np.ndarray:
    """Integral images of what is predicted (each band, and its gradient magnitude), padded
    by the search radius with edge values so that every shift has a full block."""
    bands = np.asarray(guide, dtype=np.float64)
    if bands.ndim == 2:
        bands = bands[None]
    targets = []
    for band in bands:
        gy, gx = np.gradient(band)
        targets += [band, np.hypot(gx, gy)]
    padded = np.pad(np.stack(targets), ((0, 0), (radius, radius), (radius, radius)), "edge")
    sums = np.zeros((padded.shape[0], padded.shape[1] + 1, padded.shape[2] + 1))
    sums[:, 1:, 1:] = padded.cumsum(1).cumsum(2)
    return sums


def _shift_scores(
    features: np.ndarray,
    sums: np.ndarray,
    regions: list[np.ndarray],
    scale: int,
    radius: int,
    lr_shape: tuple[int, int],
) -> np.ndarray:
    """(regions, 2r+1, 2r+1) mean explained variance of the pooled targets in each region,
    for every integer shift (row index: dy + r, column index: dx + r)."""
    h, w = lr_shape
    bases = []
    for region in regions:
        design = np.concatenate([np.ones((1, int(region.sum()))), features[:, region]]).T
        bases.append(np.linalg.qr(design)[0])
    rows = np.arange(h)[:, None] * scale
    cols = np.arange(w)[None, :] * scale
    scores = np.empty((len(regions), 2 * radius + 1, 2 * radius + 1))
    for iy, dy in enumerate(range(-radius, radius + 1)):
        r0 = rows + radius + dy
        for ix, dx in enumerate(range(-radius, radius + 1)):
            c0 = cols + radius + dx
            box = (
                sums[:, r0 + scale, c0 + scale] - sums[:, r0, c0 + scale]
                - sums[:, r0 + scale, c0] + sums[:, r0, c0]
            )
            for k, (region, basis) in enumerate(zip(regions, bases, strict=True)):
                y = box[:, region].T  # (n, targets)
                y = y - y.mean(axis=0)
                total = (y * y).sum(axis=0)
                explained = ((basis.T @ y) ** 2).sum(axis=0)
                keep = total > 0
                scores[k, iy, ix] = (
                    float(np.mean(explained[keep] / total[keep])) if keep.any() else 0.0
                )
    return scores


def _peak(scores: np.ndarray) -> tuple[float, float, float]:
    """(dx, dy, score) of the best shift, sub-pixel by a parabola along each axis."""
    radius = scores.shape[0] // 2
    iy, ix = np.unravel_index(int(np.argmax(scores)), scores.shape)

    def vertex(a: float, b: float, c: float) -> float:
        curvature = a - 2 * b + c
        return 0.0 if curvature >= 0 else float(np.clip(0.5 * (a - c) / curvature, -0.5, 0.5))

    ox = vertex(*scores[iy, ix - 1 : ix + 2]) if 0 < ix < scores.shape[1] - 1 else 0.0
    oy = vertex(*scores[iy - 1 : iy + 2, ix]) if 0 < iy < scores.shape[0] - 1 else 0.0
    return ix - radius + ox, iy - radius + oy, float(scores[iy, ix])


def _distinctness(scores: np.ndarray, scale: int) -> float:
    """How much the best shift stands out from the best one over a source pixel away."""
    radius = scores.shape[0] // 2
    iy, ix = np.unravel_index(int(np.argmax(scores)), scores.shape)
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    far = np.hypot(xx - (ix - radius), yy - (iy - radius)) > scale
    best, height = scores[iy, ix], scores[iy, ix] - np.median(scores)
    if not far.any() or height <= 0:
        return 0.0
    return float((best - scores[far].max()) / height)


def _halves(region: np.ndarray) -> list[np.ndarray]:
    """The region's left, right, top and bottom halves."""
    h, w = region.shape
    parts = []
    for axis, size in ((1, w), (0, h)):
        for first in (True, False):
            part = region.copy()
            index = [slice(None), slice(None)]
            index[axis] = slice(size // 2, None) if first else slice(None, size // 2)
            part[tuple(index)] = False
            parts.append(part)
    return [p for p in parts if p.sum() >= 32]


def move_whole(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """(C, H, W) image whose pixel (r, c) is the input's (r + dy, c + dx), edges repeated:
    a guide displaced by (dx, dy) whole pixels, moved back."""
    pad = max(abs(dx), abs(dy))
    if pad == 0:
        return image
    wide = np.pad(image, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    h, w = image.shape[-2:]
    return wide[:, pad + dy : pad + dy + h, pad + dx : pad + dx + w]


def translate(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """(C, H, W) image with its content moved by (dx, dy) pixels (bicubic, edges repeated):
    how the benchmark and the tests displace a guide by a sub-pixel amount."""
    data = np.asarray(image, dtype=np.float32)
    squeeze = data.ndim == 2
    if squeeze:
        data = data[None]
    _, height, width = data.shape
    rows = torch.arange(height, dtype=torch.float32)
    cols = torch.arange(width, dtype=torch.float32)
    yy, xx = torch.meshgrid(rows, cols, indexing="ij")
    grid = torch.stack(
        [(xx - dx + 0.5) / width * 2 - 1, (yy - dy + 0.5) / height * 2 - 1], dim=-1
    )[None]
    moved = F.grid_sample(
        torch.from_numpy(np.ascontiguousarray(data))[None], grid,
        mode="bicubic", padding_mode="border", align_corners=False,
    )[0].numpy()
    return moved[0] if squeeze else moved

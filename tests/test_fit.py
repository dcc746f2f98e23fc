"""The per-image fit: input validation, masking, determinism, progress."""

from __future__ import annotations

import numpy as np
import pytest

from mmsr_geo import FitConfig, fit, super_resolve
from mmsr_geo.normalisation import fill_invalid

SMALL = {"iterations": 4, "features": 8, "s2g_kernel": 3, "g2s_kernel": 3, "device": "cpu"}


def _pair(h: int = 8, w: int = 10, scale: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    hr = rng.normal(size=(h * scale, w * scale)).cumsum(0).cumsum(1)
    guide = np.stack([hr, -hr, rng.normal(size=hr.shape)]).astype(np.float32)
    lr = hr.reshape(h, scale, w, scale).mean((1, 3))
    return lr, guide


def test_prediction_shape_dtype_and_units():
    lr, guide = _pair()
    result = fit(lr + 1000.0, guide, 2, FitConfig(**SMALL))
    assert result.prediction.shape == (16, 20)
    assert result.prediction.dtype == np.float32
    # de-normalised: lives around the source's level, not around zero
    assert abs(float(result.prediction.mean()) - float((lr + 1000.0).mean())) < 5 * lr.std()
    assert np.isfinite(result.cycle_rmse) and result.cycle_rmse >= 0
    assert result.device == "cpu"


def test_same_seed_same_result_and_other_seed_differs():
    lr, guide = _pair()
    a = super_resolve(lr, guide, 2, seed=3, **SMALL)
    b = super_resolve(lr, guide, 2, seed=3, **SMALL)
    c = super_resolve(lr, guide, 2, seed=4, **SMALL)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_masked_pixels_neither_enter_the_loss_nor_the_network():
    lr, guide = _pair()
    mask = np.ones(lr.shape, dtype=bool)
    mask[2:5, 3:7] = False
    with_nan = lr.copy()
    with_nan[~mask] = np.nan
    with_junk = lr.copy()
    with_junk[~mask] = 1e9
    a = super_resolve(with_nan, guide, 2, mask=mask, **SMALL)
    b = super_resolve(with_junk, guide, 2, mask=mask, **SMALL)
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(a).all()


def test_fill_invalid_interpolates_from_valid_pixels():
    source = np.tile(np.arange(10.0), (6, 1))
    valid = np.ones_like(source, dtype=bool)
    valid[2:4, 4:6] = False
    filled = fill_invalid(np.where(valid, source, np.nan), valid)
    assert np.isfinite(filled).all()
    assert np.all((filled[2:4, 4:6] > 3) & (filled[2:4, 4:6] < 6))
    np.testing.assert_array_equal(filled[valid], source[valid])


def test_loss_goes_down_and_progress_reports_every_iteration():
    lr, guide = _pair()
    seen: list[tuple[int, int, float]] = []
    config = FitConfig(**{**SMALL, "iterations": 30})
    fit(lr, guide, 2, config, progress=lambda d, t, loss: seen.append((d, t, loss)))
    assert [d for d, _, _ in seen] == list(range(1, 31))
    assert all(t == 30 for _, t, _ in seen)
    assert np.mean([x for *_, x in seen[-5:]]) < np.mean([x for *_, x in seen[:5]])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda lr, g: (lr, g[:, :-1], 2), "needs a 16x20 guide"),
        (lambda lr, g: (lr, g, 1), "integer >= 2"),
        (lambda lr, g: (lr, g, 2.0), "integer >= 2"),
        (lambda lr, g: (lr[None], g, 2), "2-D"),
        (lambda lr, g: (np.where(lr > lr.mean(), np.nan, lr), g, 2), "NaN"),
        (lambda lr, g: (np.full_like(lr, 7.0), g, 2), "constant"),
        (lambda lr, g: (lr, np.ones_like(g), 2), "guide is constant"),
        (lambda lr, g: (lr, np.where(g > 0, np.nan, g), 2), "guide has NaN"),
    ],
)
def test_bad_inputs_raise_clear_value_errors(change, message):
    lr, guide = _pair()
    source, guide, scale = change(lr, guide)
    with pytest.raises(ValueError, match=message):
        fit(source, guide, scale, FitConfig(**SMALL))


def test_bad_masks_and_configs_raise():
    lr, guide = _pair()
    with pytest.raises(ValueError, match="no valid"):
        fit(lr, guide, 2, FitConfig(**SMALL), mask=np.zeros(lr.shape, bool))
    with pytest.raises(ValueError, match="shape"):
        fit(lr, guide, 2, FitConfig(**SMALL), mask=np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="odd"):
        FitConfig(s2g_kernel=4)
    with pytest.raises(ValueError, match="device"):
        fit(lr, guide, 2, FitConfig(**{**SMALL, "device": "tpu"}))

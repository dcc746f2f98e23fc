"""The raster network works around the source's local level (mmsr_geo.levels): the level of a
constant is that constant up to every edge, an offset of the source moves the prediction by
the same offset, and a network from scratch trained on crops carries its level and gain."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _rasters import terrain

from mmsr_geo.errors import InputError
from mmsr_geo.evaluation import evaluate_pair
from mmsr_geo.fit_config import FitConfig
from mmsr_geo.levels import LEVEL_SIGMA, detail_gain, local_level
from mmsr_geo.model import MMSRNet
from mmsr_geo.normalisation import normalisation_stats
from mmsr_geo.raster_fit import CropBudget, array_crops, finetune_many, predict_many, train_network


def test_the_level_of_a_constant_is_the_constant_up_to_every_edge() -> None:
    constant = torch.full((2, 1, 9, 13), 4.5, dtype=torch.float64)
    assert torch.allclose(local_level(constant, 3.0), constant)
    ramp = torch.arange(40, dtype=torch.float64).repeat(40, 1)[None, None]
    level = local_level(ramp, 2.0)
    # a straight ramp is its own level away from the edges, and pulled inwards at them
    assert torch.allclose(level[..., 8:-8], ramp[..., 8:-8])
    assert level[0, 0, 0, 0] > ramp[0, 0, 0, 0] and level[0, 0, 0, -1] < ramp[0, 0, 0, -1]


def test_an_offset_of_the_source_moves_the_prediction_by_the_offset() -> None:
    torch.manual_seed(0)
    net = MMSRNet(guide_channels=3, s2g_kernel=3, g2s_kernel=3, features=8, level_sigma=3.0)
    net.detail_gain.fill_(2.5)
    lr, guide = torch.randn(2, 1, 12, 12), torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        moved = net(lr + 7.0, guide) - net(lr, guide)
        stacked = MMSRNet.stacked([net, net])(lr, guide)
        alone = net(lr, guide)
    assert torch.allclose(moved, torch.full_like(moved, 7.0), atol=1e-4)
    assert torch.allclose(stacked, alone, atol=1e-5)
    plain = MMSRNet(guide_channels=3, s2g_kernel=3, g2s_kernel=3, features=8)
    assert "detail_gain" not in plain.state_dict()  # the paper's network is untouched


def test_the_gain_scales_the_detail_to_unit_spread() -> None:
    values = torch.randn(3, 1, 16, 16, dtype=torch.float64) * 0.01 + 50.0
    gain = detail_gain(values, torch.ones_like(values), 3.0)
    detail = (values - local_level(values, 3.0)) * gain
    assert float(detail.std()) == pytest.approx(1.0, rel=1e-6)
    assert detail_gain(torch.ones(1, 1, 8, 8), torch.ones(1, 1, 8, 8), 3.0) == 1.0


def test_a_level_is_refused_with_a_residual_start() -> None:
    with pytest.raises(InputError, match="residual none"):
        FitConfig(level_sigma=3.0, residual="bicubic")
    with pytest.raises(InputError, match="level_sigma"):
        FitConfig(level_sigma=-1.0)


def test_a_network_from_scratch_trains_around_the_level_and_keeps_it() -> None:
    lr, guide = terrain(24, 24, 2)
    lr = lr + 1000.0  # far from zero: the level carries it
    stats = normalisation_stats(lr.astype(np.float64), guide)
    budget = CropBudget(steps=30, crop_size=8, crops_per_step=2, pool=9, level_sigma=LEVEL_SIGMA)
    crops = array_crops(lr, guide, 2, budget, seed=0)
    scratch = FitConfig(iterations=30, features=8, s2g_kernel=3, g2s_kernel=3, device="cpu",
                        schedule="cosine")
    weights = train_network(crops, 2, scratch, budget, stats)
    assert weights.config.level_sigma == LEVEL_SIGMA
    gain = float(weights.state_dict()["detail_gain"][0])
    assert gain > 1.0  # the detail is a small share of the raster's spread
    (predicted,) = predict_many(weights, [lr], [guide], 2, scratch, masks=[None], stats=[stats])
    assert predicted.cycle_rmse < 0.5 * lr.std()  # it reproduces a source far from zero
    (tuned,) = finetune_many(weights, [lr], [guide], 2, scratch, masks=[None], stats=[stats],
                             seeds=[0])
    assert tuned.prediction.shape == (48, 48) and np.isfinite(tuned.prediction).all()

    residual = FitConfig(**{**scratch.__dict__, "residual": "bicubic"})
    assert train_network(crops, 2, residual, budget, stats).config.level_sigma == 0.0
    plain = CropBudget(steps=30, crop_size=8, crops_per_step=2, pool=9)  # the default: off
    assert train_network(crops, 2, scratch, plain, stats).config.level_sigma == 0.0


def test_evaluate_measures_the_level_split_and_refuses_it_per_tile() -> None:
    lr, guide = terrain(24, 24, 2)
    reference = np.kron(lr, np.ones((2, 2))) + np.sin(np.arange(48) / 3)[None, :]
    config = FitConfig(features=8, s2g_kernel=3, g2s_kernel=3, device="cpu")
    scores = {
        sigma: evaluate_pair(reference, guide, 2, config, schedule="cosine-avg", iterations=10,
                             fit_mode="raster", level_sigma=sigma, register="off")
        for sigma in (0.0, LEVEL_SIGMA)
    }
    assert all(np.isfinite(s.rmse) for s in scores.values())
    assert scores[0.0].rmse != scores[LEVEL_SIGMA].rmse  # another network
    with pytest.raises(InputError, match="level sigma is for --fit raster"):
        evaluate_pair(reference, guide, 2, config, fit_mode="tile", level_sigma=LEVEL_SIGMA)

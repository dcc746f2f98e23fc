"""The MMSR network (Dong et al., ECCV 2022, sections 3 and 4.1).

A source branch (1x1 convolutions on the bilinearly upsampled LR source) and a guide branch
(3x3 convolutions on the HR guide) extract features that modulate each other through
cross-domain adaptive filters; a 1x1 fusion and a 1x1 prediction head turn the two modulated
feature maps into the HR source.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .levels import level_radius, local_level
from .ops import cross_domain_filter

ConvFactory = Callable[[int, int, int], nn.Module]
"""(in channels, out channels, kernel size) -> a convolution with "same" padding."""


def _conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Module:
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)


class GroupedConv2d(nn.Module):
    """``copies`` independent convolutions, one per image of the batch, as one grouped
    convolution: image i of a (copies, C, H, W) batch goes through copy i only.

    This is how :func:`mmsr_geo.fit.fit_many` optimises many tiles' networks in one step: one
    kernel launch for all tiles instead of one per tile, each tile still with its own weights.
    Weights are (copies, out, in, k, k), biases (copies, out).
    """

    def __init__(self, copies: int, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.copies = copies
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(
            torch.empty(copies, out_channels, in_channels, kernel_size, kernel_size)
        )
        self.bias = nn.Parameter(torch.empty(copies, out_channels))
        bound = 1 / math.sqrt(in_channels * kernel_size * kernel_size)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if n != self.copies:
            raise ValueError(f"a batch of {n} images for {self.copies} grouped networks")
        weight = self.weight.reshape(-1, *self.weight.shape[2:])
        out = F.conv2d(
            x.reshape(1, n * c, h, w), weight, self.bias.reshape(-1), padding=self.padding,
            groups=n,
        )
        return out.reshape(n, -1, h, w)


class ResidualBlock(nn.Module):
    """EDSR-style block (conv, ReLU, conv, identity skip), as the paper adopts from [30]."""

    def __init__(self, features: int, kernel_size: int, conv: ConvFactory = _conv) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv(features, features, kernel_size),
            nn.ReLU(inplace=True),
            conv(features, features, kernel_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _branch(
    in_channels: int, features: int, kernel_size: int, conv: ConvFactory = _conv
) -> nn.Sequential:
    """Two convolutions with ReLU, then two residual blocks (one feature-extraction branch)."""
    return nn.Sequential(
        conv(in_channels, features, kernel_size),
        nn.ReLU(inplace=True),
        conv(features, features, kernel_size),
        nn.ReLU(inplace=True),
        ResidualBlock(features, kernel_size, conv),
        ResidualBlock(features, kernel_size, conv),
    )


GUIDE_BRANCH_RADIUS = 6
"""Output pixels one guide feature reaches: the guide branch's six 3 x 3 convolutions."""


def context_radius(
    scale: int, s2g_kernel: int, g2s_kernel: int, level_sigma: float = 0.0
) -> int:
    """Source pixels around a window beyond which nothing changes the network's prediction
    inside it (a residual start's bilinear base included): a forward pass of the window grown
    by this many pixels gives, on the window, what a pass over the whole raster gives. The
    guide branch and the wider filter reach :data:`GUIDE_BRANCH_RADIUS` + k // 2 output
    pixels, the bilinear upsampling one source pixel, the local level its blur's radius."""
    filters = max(s2g_kernel, g2s_kernel) // 2
    radius = 1 + math.ceil((GUIDE_BRANCH_RADIUS + filters) / scale)
    return radius + (level_radius(level_sigma) if level_sigma > 0 else 0)


class MMSRNet(nn.Module):
    """Mutual-modulation super-resolution network.

    Args:
        guide_channels: bands of the HR guide (3 for RGB, 4 for RGBNIR, ...).
        s2g_kernel: neighbourhood of the source-to-guide filter (11 on depth, 5 on remote sensing).
        g2s_kernel: neighbourhood of the guide-to-source filter (5 on depth, 3 on remote sensing).
        features: channels of every hidden feature map (64 in the paper).
        source_to_guide: enable the source-to-guide modulation (Table 2 ablation switch).
        guide_to_source: enable the guide-to-source modulation (Table 2 ablation switch).
        filter_backend: how the filters run (see :func:`mmsr_geo.ops.cross_domain_filter`);
            "unfold" is the slow reference, kept for benchmarks.
        copies: independent networks in one module (grouped convolutions, see
            :class:`GroupedConv2d`): the batch must then hold ``copies`` images, image i going
            through network i. :meth:`stacked` builds one from ordinary networks.
        level_sigma: 0 (the paper's network) or the Gaussian, in source pixels, of the local
            level the network works around (:mod:`mmsr_geo.levels`): it is then given the
            source minus its level, times ``detail_gain`` (a buffer, set before training),
            and adds the level back to its output.
    """

    def __init__(
        self,
        guide_channels: int = 3,
        s2g_kernel: int = 11,
        g2s_kernel: int = 5,
        features: int = 64,
        *,
        source_to_guide: bool = True,
        guide_to_source: bool = True,
        filter_backend: str = "auto",
        copies: int = 1,
        level_sigma: float = 0.0,
    ) -> None:
        super().__init__()
        self.guide_channels = guide_channels
        self.s2g_kernel = s2g_kernel
        self.g2s_kernel = g2s_kernel
        self.features = features
        self.source_to_guide = source_to_guide
        self.guide_to_source = guide_to_source
        self.filter_backend = filter_backend
        self.copies = copies
        self.level_sigma = level_sigma
        if level_sigma > 0:
            self.register_buffer("detail_gain", torch.ones(copies))
        conv: ConvFactory = _conv
        if copies > 1:
            def conv(i: int, o: int, k: int) -> nn.Module:
                return GroupedConv2d(copies, i, o, k)

        self.guide_branch = _branch(guide_channels, features, 3, conv)
        self.source_branch = _branch(1, features, 1, conv)
        self.guide_projection = conv(features, features, 1)
        self.source_projection = conv(features, features, 1)
        self.fusion = conv(2 * features, features, 1)
        self.head = nn.Sequential(
            ResidualBlock(features, 1, conv),
            ResidualBlock(features, 1, conv),
            ResidualBlock(features, 1, conv),
            conv(features, 1, 1),
        )

    @classmethod
    def stacked(cls, networks: Sequence[MMSRNet]) -> MMSRNet:
        """One module holding ``networks`` (same architecture) as grouped copies, with their
        weights: image i of a batch then gives exactly what ``networks[i]`` gives."""
        first = networks[0]
        grouped = cls(
            first.guide_channels,
            first.s2g_kernel,
            first.g2s_kernel,
            first.features,
            source_to_guide=first.source_to_guide,
            guide_to_source=first.guide_to_source,
            filter_backend=first.filter_backend,
            copies=len(networks),
            level_sigma=first.level_sigma,
        )
        states = [n.state_dict() for n in networks]
        with torch.no_grad():
            for name, tensor in grouped.state_dict().items():
                tensor.copy_(torch.stack([state[name] for state in states]).view_as(tensor))
        return grouped

    def forward(self, source_lr: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """HR source (B, 1, H, W) from the LR source (B, 1, h, w) and the guide (B, C, H, W)."""
        if self.level_sigma > 0:
            level = local_level(source_lr, self.level_sigma)
            gain = self.detail_gain.view(-1, 1, 1, 1)
            detail = self._predict((source_lr - level) * gain, guide) / gain
            return detail + F.interpolate(
                level, size=guide.shape[-2:], mode="bilinear", align_corners=False
            )
        return self._predict(source_lr, guide)

    def _predict(self, source_lr: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        upsampled = F.interpolate(
            source_lr, size=guide.shape[-2:], mode="bilinear", align_corners=False
        )
        source_features = self.source_projection(self.source_branch(upsampled))
        guide_features = self.guide_projection(self.guide_branch(guide))
        s2g = source_features
        if self.source_to_guide:
            s2g = cross_domain_filter(
                guide_features, source_features, self.s2g_kernel, backend=self.filter_backend
            )
        g2s = guide_features
        if self.guide_to_source:
            g2s = cross_domain_filter(
                source_features, guide_features, self.g2s_kernel, backend=self.filter_backend
            )
        return self.head(self.fusion(torch.cat([s2g, g2s], dim=1)))

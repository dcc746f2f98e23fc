"""The MMSR network (Dong et al., ECCV 2022, sections 3 and 4.1).

A source branch (1x1 convolutions on the bilinearly upsampled LR source) and a guide branch
(3x3 convolutions on the HR guide) extract features that modulate each other through
cross-domain adaptive filters; a 1x1 fusion and a 1x1 prediction head turn the two modulated
feature maps into the HR source.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ops import cross_domain_filter


class ResidualBlock(nn.Module):
    """EDSR-style block (conv, ReLU, conv, identity skip), as the paper adopts from [30]."""

    def __init__(self, features: int, kernel_size: int) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.body = nn.Sequential(
            nn.Conv2d(features, features, kernel_size, padding=pad),
            nn.ReLU(inplace=True),
            nn.Conv2d(features, features, kernel_size, padding=pad),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _branch(in_channels: int, features: int, kernel_size: int) -> nn.Sequential:
    """Two convolutions with ReLU, then two residual blocks (one feature-extraction branch)."""
    pad = kernel_size // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, features, kernel_size, padding=pad),
        nn.ReLU(inplace=True),
        nn.Conv2d(features, features, kernel_size, padding=pad),
        nn.ReLU(inplace=True),
        ResidualBlock(features, kernel_size),
        ResidualBlock(features, kernel_size),
    )


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
    ) -> None:
        super().__init__()
        self.s2g_kernel = s2g_kernel
        self.g2s_kernel = g2s_kernel
        self.source_to_guide = source_to_guide
        self.guide_to_source = guide_to_source
        self.filter_backend = filter_backend
        self.guide_branch = _branch(guide_channels, features, 3)
        self.source_branch = _branch(1, features, 1)
        self.guide_projection = nn.Conv2d(features, features, 1)
        self.source_projection = nn.Conv2d(features, features, 1)
        self.fusion = nn.Conv2d(2 * features, features, 1)
        self.head = nn.Sequential(
            ResidualBlock(features, 1),
            ResidualBlock(features, 1),
            ResidualBlock(features, 1),
            nn.Conv2d(features, 1, 1),
        )

    def forward(self, source_lr: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """HR source (B, 1, H, W) from the LR source (B, 1, h, w) and the guide (B, C, H, W)."""
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

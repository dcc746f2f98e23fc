"""A trained network as a value: its weights' bytes, what it was trained with, and a
fingerprint that names it in tags, checkpoints and the workers' caches.

The raster-level fit (:mod:`mmsr_geo.raster_fit`) produces one; every tile's forward pass or
fine-tune starts from it, in this process, in local workers or on a Dask cluster, so it is
picklable, small, and rebuilt into a network once per process.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass

import torch

from .fit_config import FitConfig
from .model import MMSRNet


@dataclass(frozen=True)
class NetworkWeights:
    """A trained raster network: its weights, what it was trained with, and a fingerprint.

    Picklable and small (1.0 MB at 64 features), so it travels to workers once per run.
    """

    state: bytes
    """``torch.save`` of the state dict (CPU tensors)."""
    fingerprint: str
    """BLAKE2b of the weights' values (names, shapes and bytes, in order)."""
    guide_channels: int
    config: FitConfig
    """The configuration it was trained with (kernels, features, residual, precision)."""
    steps: int
    seconds: float
    final_loss: float
    device: str

    def network(self, device: torch.device | str = "cpu") -> MMSRNet:
        """A network with these weights on ``device``, in evaluation mode: built once per
        process and device (a worker predicts many tiles with it)."""
        key = (self.fingerprint, str(device))
        if key not in _NETWORKS:
            _NETWORKS.clear()  # one run's network at a time
            _NETWORKS[key] = self._build(device).eval()
        return _NETWORKS[key]

    def _build(self, device: torch.device | str) -> MMSRNet:
        model = MMSRNet(
            guide_channels=self.guide_channels,
            s2g_kernel=self.config.s2g_kernel,
            g2s_kernel=self.config.g2s_kernel,
            features=self.config.features,
            level_sigma=self.config.level_sigma,
        )
        model.load_state_dict(self.state_dict())
        return model.to(device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return torch.load(io.BytesIO(self.state), map_location="cpu", weights_only=True)

    def intact(self) -> bool:
        """Whether the weights are the ones fingerprinted (a damaged checkpoint is not)."""
        return fingerprint_of(self.state_dict()) == self.fingerprint


_NETWORKS: dict[tuple[str, str], MMSRNet] = {}


def fingerprint_of(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in state.items():
        digest.update(name.encode("utf-8"))
        digest.update(str(tuple(tensor.shape)).encode("ascii"))
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def weights_of(
    model: MMSRNet, guide_channels: int, config: FitConfig, steps: int, started: float,
    loss: float, device: torch.device,
) -> NetworkWeights:
    """``model``'s weights as a :class:`NetworkWeights` (``started``: ``perf_counter`` when
    its training began)."""
    state = {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return NetworkWeights(
        state=buffer.getvalue(),
        fingerprint=fingerprint_of(state),
        guide_channels=guide_channels,
        config=config,
        steps=steps,
        seconds=time.perf_counter() - started,
        final_loss=loss,
        device=str(device),
    )

"""Turning a user's device string into a torch device, with errors a user understands."""

from __future__ import annotations

import re

import torch

from .errors import InputError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Map "auto", "cpu", "cuda" or "cuda:N" to an available torch device.

    "auto" takes the first CUDA device when one is present, else the CPU. Asking for CUDA on a
    machine without it is an error rather than a silent fall-back, so a batch job that was
    meant to run on a GPU does not quietly take days on a CPU.
    """
    if isinstance(device, torch.device):
        device = str(device)
    name = device.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not match:
        raise InputError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available on this machine")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise InputError(
            f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
        )
    return torch.device("cuda", index)

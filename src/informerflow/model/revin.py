"""Reversible instance normalisation (RevIN, Kim et al., ICLR 2022) around the Informer.

Each encoder window is standardised by its own per-channel mean and std, then scaled by a
learnable affine map; the forecast is mapped back with the same statistics. This removes the
level shift between windows that a train-split scaler cannot.

Shape legend: B batch, L length, C input channels, O output channels.

Convention (shared with ``informerflow.data.windows``): the output channels are the LAST O input
channels, so in MS mode (O = 1 < C) the target is the last input column.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


class RevIN(nn.Module):
    """Per-window normalisation with learnable affine parameters (one pair per channel)."""

    def __init__(self, n_channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_channels))
        self.bias = nn.Parameter(torch.zeros(n_channels))

    def stats(self, x_enc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of each window and channel: two (B, 1, C) tensors."""
        mean = x_enc.mean(dim=1, keepdim=True).detach()
        std = torch.sqrt(x_enc.var(dim=1, keepdim=True, unbiased=False) + self.eps).detach()
        return mean, std

    def normalise(self, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """(B, L, C) raw -> (B, L, C) normalised with the given window statistics."""
        return (x - mean) / std * self.weight + self.bias

    def denormalise(
        self, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
    ) -> torch.Tensor:
        """(B, L, O) normalised -> raw, using the statistics of the last O channels."""
        n_out = y.shape[-1]
        weight, bias = self.weight[-n_out:], self.bias[-n_out:]
        # A tiny offset keeps the division finite if the affine weight is driven to zero.
        y = (y - bias) / (weight + self.eps**2)
        return y * std[..., -n_out:] + mean[..., -n_out:]

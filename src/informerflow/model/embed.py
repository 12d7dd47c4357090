"""Input embeddings (paper section 3 and appendix B): values + position + calendar stamps.

Shape legend: B batch, L length, C input channels, F time-feature columns, E model width.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from informerflow.errors import DataError
from informerflow.timefeatures import CALENDAR_COLUMNS, CALENDAR_TABLE_SIZES

log = logging.getLogger(__name__)


def sinusoid_table(n_positions: int, d_model: int) -> torch.Tensor:
    """The transformer's fixed sin/cos table: (n_positions, d_model)."""
    position = torch.arange(n_positions, dtype=torch.float32).unsqueeze(1)  # (N, 1)
    freqs = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32)
                      * (-math.log(10000.0) / d_model))  # (ceil(E / 2),)
    table = torch.zeros(n_positions, d_model)
    table[:, 0::2] = torch.sin(position * freqs)
    table[:, 1::2] = torch.cos(position * freqs[: d_model // 2])
    return table


class TokenEmbedding(nn.Module):
    """Values to model width with a width-3 convolution, wrapping around the window's ends."""

    def __init__(self, c_in: int, d_model: int):
        super().__init__()
        self.conv = nn.Conv1d(c_in, d_model, kernel_size=3, padding=1, padding_mode="circular",
                              bias=False)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_in", nonlinearity="leaky_relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, L, C) -> (B, C, L) -> conv -> (B, E, L) -> (B, L, E)
        return self.conv(x.transpose(1, 2)).transpose(1, 2)


class PositionalEmbedding(nn.Module):
    """Sinusoidal position codes; a non-persistent buffer, so never part of a state_dict."""

    def __init__(self, d_model: int, max_len: int = 5000):
        super().__init__()
        self.d_model = d_model
        self.register_buffer("table", sinusoid_table(max_len, d_model), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L = x.shape[1]
        if L > self.table.shape[0]:  # longer than planned: grow once, keep the device
            self.table = sinusoid_table(L, self.d_model).to(self.table.device)
        return self.table[:L].unsqueeze(0)  # (1, L, E)


class TimeFeatureEmbedding(nn.Module):
    """Continuous "timeF" features to model width through one linear map."""

    def __init__(self, n_features: int, d_model: int):
        super().__init__()
        self.proj = nn.Linear(n_features, d_model, bias=False)

    def forward(self, marks: torch.Tensor) -> torch.Tensor:
        return self.proj(marks)  # (B, L, F) -> (B, L, E)


class CalendarEmbedding(nn.Module):
    """Integer calendar columns looked up in tables and summed.

    ``learned`` uses trainable ``nn.Embedding`` tables; ``fixed`` uses frozen sinusoid tables
    kept as non-persistent buffers (they are recomputed, never saved).
    """

    def __init__(self, n_features: int, d_model: int, learned: bool):
        super().__init__()
        self.sizes = CALENDAR_TABLE_SIZES[:n_features]
        self.learned = learned
        if learned:
            self.tables = nn.ModuleList(nn.Embedding(n, d_model) for n in self.sizes)
        else:
            for i, n in enumerate(self.sizes):
                self.register_buffer(f"table{i}", sinusoid_table(n, d_model), persistent=False)

    def forward(self, marks: torch.Tensor) -> torch.Tensor:
        index = marks.long()  # (B, L, F)
        self._check_range(index)
        out = 0
        for i in range(len(self.sizes)):
            if self.learned:
                out = out + self.tables[i](index[..., i])  # (B, L) -> (B, L, E)
            else:
                out = out + getattr(self, f"table{i}")[index[..., i]]
        return out

    def _check_range(self, index: torch.Tensor) -> None:
        for i, size in enumerate(self.sizes):
            column = index[..., i]
            if column.numel() and (column.min() < 0 or column.max() >= size):
                raise DataError(
                    f"time-feature column {i} ({CALENDAR_COLUMNS[i]}) holds values "
                    f"{int(column.min())}..{int(column.max())} outside 0..{size - 1}; "
                    "calendar embeddings need time_features(..., embed='fixed'|'learned')"
                )


class DataEmbedding(nn.Module):
    """Sum of the value, position and calendar embeddings, then dropout."""

    def __init__(self, c_in: int, d_model: int, embed: str, n_features: int, dropout: float):
        super().__init__()
        self.value = TokenEmbedding(c_in, d_model)
        self.position = PositionalEmbedding(d_model)
        self.temporal: nn.Module
        if embed == "timeF":
            self.temporal = TimeFeatureEmbedding(n_features, d_model)
        else:
            self.temporal = CalendarEmbedding(n_features, d_model, learned=embed == "learned")
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, marks: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.value(x) + self.position(x) + self.temporal(marks))  # (B, L, E)

"""Chronological splits, the train-only scaler and the sliding windows Informer trains on.

Shape legend: N rows of the series, L encoder length (seq_len), S decoder start (label_len),
P horizon (pred_len), C input channels, O output channels, F time features.

A split owns the *targets* that fall in its rows. Validation and test windows borrow their
encoder input from the rows just before the split, as the Informer paper's loaders do, so no test
row is ever skipped and every test row is predicted at every horizon step it can be.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from informerflow.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitBounds:
    """Row ranges ``[start, end)`` of each split's targets, and the lookback each borrows."""

    train: tuple[int, int]
    val: tuple[int, int]
    test: tuple[int, int]
    seq_len: int
    pred_len: int

    def window_rows(self, split: str) -> tuple[int, int]:
        """Rows the split's windows read: its own rows plus ``seq_len`` rows before them."""
        start, end = getattr(self, split)
        return max(0, start - self.seq_len), end

    def n_windows(self, split: str) -> int:
        lo, hi = self.window_rows(split)
        return max(0, hi - lo - self.seq_len - self.pred_len + 1)


def split_bounds(
    n_rows: int, train_frac: float, val_frac: float, seq_len: int, pred_len: int
) -> SplitBounds:
    """Cut ``n_rows`` chronologically and check that every split yields at least one window.

    Raises:
        DataError: naming each split that is too short, its rows and the rows it needs.
    """
    n_train = int(n_rows * train_frac)
    n_val = int(n_rows * val_frac)
    bounds = SplitBounds(
        train=(0, n_train),
        val=(n_train, n_train + n_val),
        test=(n_train + n_val, n_rows),
        seq_len=seq_len,
        pred_len=pred_len,
    )
    problems = []
    for split in SPLITS:
        if bounds.n_windows(split) < 1:
            start, end = getattr(bounds, split)
            lo, _ = bounds.window_rows(split)
            borrowed = start - lo
            need = seq_len + pred_len - borrowed
            problems.append(
                f"the {split} split has {end - start} rows but needs at least {need} "
                f"(seq_len {seq_len} + pred_len {pred_len}"
                + (f", of which {borrowed} are borrowed from the previous split)" if borrowed
                   else ")")
            )
    if problems:
        raise DataError(
            f"too few rows ({n_rows}) for the window lengths: " + "; ".join(problems)
            + ". Use a longer file, shorter seq_len/pred_len, or other split fractions."
        )
    return bounds


@dataclass
class Scaler:
    """Per-column standardisation fitted on the training rows only."""

    columns: list[str]
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray, columns: list[str]) -> Scaler:
        mean = values.mean(axis=0)
        std = values.std(axis=0)
        # A constant column would divide by zero; leaving it unscaled keeps it finite and exact.
        std = np.where(std > 0, std, 1.0)
        return cls(list(columns), mean.astype(np.float64), std.astype(np.float64))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std

    def inverse(self, values: np.ndarray, columns: list[str] | None = None) -> np.ndarray:
        """Undo scaling; ``columns`` picks the statistics when ``values`` holds a subset."""
        idx = [self.columns.index(c) for c in columns] if columns else slice(None)
        return values * self.std[idx] + self.mean[idx]

    def to_json(self) -> str:
        return json.dumps(
            {"columns": self.columns, "mean": self.mean.tolist(), "std": self.std.tolist()}
        )

    @classmethod
    def from_json(cls, text: str) -> Scaler:
        raw = json.loads(text)
        return cls(raw["columns"], np.asarray(raw["mean"]), np.asarray(raw["std"]))


class WindowDataset(Dataset):
    """Sliding windows over one contiguous, scaled series.

    Each item is ``(x_enc, mark_enc, x_dec, mark_dec, y)``:
    x_enc (L, C), mark_enc (L, F), x_dec (S + P, C) whose last P steps are zeros,
    mark_dec (S + P, F), y (P, O) the true future of the output channels.
    """

    def __init__(
        self,
        values: np.ndarray,
        marks: np.ndarray,
        seq_len: int,
        label_len: int,
        pred_len: int,
        n_out: int,
    ):
        self.values = torch.as_tensor(values, dtype=torch.float32)  # (N, C)
        self.marks = torch.as_tensor(marks, dtype=torch.float32)  # (N, F)
        self.seq_len, self.label_len, self.pred_len = seq_len, label_len, pred_len
        self.n_out = n_out  # output channels are the last n_out columns (target last)

    def __len__(self) -> int:
        return max(0, len(self.values) - self.seq_len - self.pred_len + 1)

    def __getitem__(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(f"window {i} out of range for {len(self)} windows")
        enc_end = i + self.seq_len
        dec_start = enc_end - self.label_len
        dec_end = enc_end + self.pred_len
        x_enc = self.values[i:enc_end]
        known = self.values[dec_start:enc_end]
        x_dec = torch.cat([known, torch.zeros(self.pred_len, known.shape[1])])
        y = self.values[enc_end:dec_end, -self.n_out:]
        return x_enc, self.marks[i:enc_end], x_dec, self.marks[dec_start:dec_end], y

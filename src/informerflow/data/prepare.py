"""From a validated series to scaled arrays, time features and split bounds, per series.

A long-format file holds several series; each keeps its own chronological split so that no
window crosses from one series into another, while one scaler (fitted on every series' training
rows) and one model serve them all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch.utils.data import ConcatDataset, Dataset

from informerflow.config import RunConfig
from informerflow.data.ingest import LoadedSeries
from informerflow.data.windows import Scaler, SplitBounds, WindowDataset, split_bounds
from informerflow.timefeatures import time_features

log = logging.getLogger(__name__)


@dataclass
class SeriesArrays:
    """One series, ready for windowing: raw (N, C), scaled (N, C) and time features (N, F)."""

    sid: str | None
    stamps: pd.DatetimeIndex
    raw: np.ndarray
    scaled: np.ndarray
    marks: np.ndarray
    bounds: SplitBounds

    def rows(self, split: str) -> tuple[int, int]:
        return self.bounds.window_rows(split)


@dataclass
class PreparedData:
    series: list[SeriesArrays]
    scaler: Scaler
    input_cols: list[str]
    output_cols: list[str]
    config: RunConfig

    def series_dataset(self, s: SeriesArrays, split: str) -> WindowDataset:
        """The windows of one series' ``split``."""
        m = self.config.model
        lo, hi = s.rows(split)
        return WindowDataset(s.scaled[lo:hi], s.marks[lo:hi], m.seq_len, m.label_len,
                             m.pred_len, n_out=len(self.output_cols))

    def dataset(self, split: str) -> Dataset:
        parts = [self.series_dataset(s, split) for s in self.series]
        return parts[0] if len(parts) == 1 else ConcatDataset(parts)

    @property
    def out_idx(self) -> list[int]:
        return [self.input_cols.index(c) for c in self.output_cols]

    def train_values(self) -> np.ndarray:
        """The unscaled training rows of every series, stacked: (rows, input columns)."""
        return np.concatenate([s.raw[s.bounds.train[0]:s.bounds.train[1]] for s in self.series])


def prepare(series: LoadedSeries, cfg: RunConfig) -> PreparedData:
    """Split every series, fit the scaler on training rows only, and compute time features.

    Also sets the model's channel counts and frequency in ``cfg`` from the data.
    """
    m, d = cfg.model, cfg.data
    input_cols = list(series.value_cols)
    output_cols = [series.target] if d.features == "MS" else input_cols
    m.enc_in = m.dec_in = len(input_cols)
    m.c_out = len(output_cols)
    m.freq = series.freq

    groups = (
        list(series.frame.groupby(series.id_col, sort=False)) if series.id_col
        else [(None, series.frame)]
    )
    bounds = {sid: split_bounds(len(g), d.train_frac, d.val_frac, m.seq_len, m.pred_len)
              for sid, g in groups}
    train_rows = np.concatenate([
        g[input_cols].to_numpy(np.float64)[slice(*bounds[sid].train)] for sid, g in groups
    ])
    scaler = Scaler.fit(train_rows, input_cols)

    arrays = []
    for sid, g in groups:
        raw = g[input_cols].to_numpy(np.float64)
        stamps = pd.DatetimeIndex(g["date"])
        arrays.append(SeriesArrays(
            sid=None if sid is None else str(sid),
            stamps=stamps,
            raw=raw,
            scaled=scaler.transform(raw).astype(np.float32),
            marks=time_features(stamps, series.freq, m.embed),
            bounds=bounds[sid],
        ))
    log.info(
        "prepared %d series, %d rows; windows train/val/test = %s",
        len(arrays), sum(len(a.raw) for a in arrays),
        "/".join(str(sum(a.bounds.n_windows(s) for a in arrays)) for s in ("train", "val", "test")),
    )
    return PreparedData(arrays, scaler, input_cols, output_cols, cfg)

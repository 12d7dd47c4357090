"""Scoring forecasts in the data's own units, and the baselines every model must beat.

Array legend: W windows, P horizon steps (pred_len), O output channels, L input length.
Every baseline is scored on exactly the windows the model is scored on, so the numbers compare.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from informerflow.data.prepare import PreparedData, SeriesArrays

log = logging.getLogger(__name__)

METRICS = ("mae", "mse", "rmse", "r2", "mape")
BASELINES = ("persistence", "seasonal_naive", "window_mean", "linear")


def regression_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """MAE, MSE, RMSE, R2 and MAPE over every element of ``pred`` and ``true`` (same shape).

    MAPE skips targets whose magnitude is below 1e-8, where a percentage has no meaning;
    utilisation data is strictly positive, so on it nothing is skipped.
    """
    err = pred - true
    mse = float(np.mean(err**2))
    ss_tot = float(np.sum((true - true.mean()) ** 2))
    nonzero = np.abs(true) > 1e-8
    return {
        "mae": float(np.mean(np.abs(err))),
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "r2": 1.0 - float(np.sum(err**2)) / ss_tot if ss_tot > 0 else float("nan"),
        "mape": float(np.mean(np.abs(err[nonzero] / true[nonzero])) * 100) if nonzero.any()
        else float("nan"),
    }


def horizon_mae(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """MAE at each horizon step: (W, P, O) -> (P,)."""
    return np.abs(pred - true).mean(axis=(0, 2))


def seasonal_period(freq: str) -> int:
    """Steps in one day for sub-daily data, one week for daily data, else one step."""
    offset = pd.tseries.frequencies.to_offset(freq)
    try:
        step = pd.Timedelta(offset)
    except ValueError:  # business days, months: no fixed length
        return 5 if offset.name.startswith("B") else 1
    if step < pd.Timedelta(days=1):
        return max(1, int(pd.Timedelta(days=1) / step))
    if step == pd.Timedelta(days=1):
        return 7
    return 1


def window_starts(n_rows: int, lo: int, hi: int, seq_len: int, pred_len: int) -> np.ndarray:
    """Start rows of every window that reads rows ``[lo, hi)`` of an ``n_rows`` series."""
    return np.arange(lo, max(lo, hi - seq_len - pred_len + 1))


def naive_baselines(
    series: np.ndarray, starts: np.ndarray, seq_len: int, pred_len: int, period: int
) -> dict[str, np.ndarray]:
    """Persistence, seasonal-naive and window-mean forecasts, each (W, P, O).

    ``series`` is (N, O) in original units. A seasonal-naive value one period back that falls
    before the first row uses the oldest row of the window instead; the test split normally lies
    far enough in the past that this never happens, and ``log`` says when it does.
    """
    enc_end = starts + seq_len
    steps = np.arange(pred_len)
    last = series[enc_end - 1]  # (W, O)
    # Whole periods back, as many as needed to land before the forecast origin: a horizon
    # longer than the period must not read values the forecaster could not have seen.
    periods_back = steps // period + 1  # (P,)
    back = (enc_end[:, None] + steps[None, :]) - period * periods_back[None, :]  # (W, P)
    if (back < 0).any():
        log.warning("seasonal naive: %d windows reach before the first row",
                    (back < 0).any(axis=1).sum())
    back = np.where(back < 0, starts[:, None], back)
    means = np.stack([series[s : s + seq_len].mean(axis=0) for s in starts])  # (W, O)
    return {
        "persistence": np.repeat(last[:, None, :], pred_len, axis=1),
        "seasonal_naive": series[back],
        "window_mean": np.repeat(means[:, None, :], pred_len, axis=1),
    }


class RidgeBaseline:
    """Linear forecaster: input window plus calendar features -> every horizon step at once.

    One ridge regression per output channel, fitted in closed form on the scaled training windows.
    Calendar features are those of the first forecast step, so the model can learn daily shape.
    """

    def __init__(self, alpha: float = 1.0):
        self.alpha = alpha
        self.weights: list[np.ndarray] = []

    @staticmethod
    def _design(windows: np.ndarray, marks: np.ndarray) -> np.ndarray:
        return np.hstack([windows, marks, np.ones((len(windows), 1))])

    def fit(self, windows: np.ndarray, marks: np.ndarray, targets: np.ndarray) -> RidgeBaseline:
        """windows (W, L, O), marks (W, F), targets (W, P, O)."""
        self.weights = []
        for o in range(targets.shape[2]):
            x = self._design(windows[:, :, o], marks)
            reg = self.alpha * np.eye(x.shape[1])
            reg[-1, -1] = 0.0  # the intercept is not shrunk
            self.weights.append(np.linalg.solve(x.T @ x + reg, x.T @ targets[:, :, o]))
        return self

    def predict(self, windows: np.ndarray, marks: np.ndarray) -> np.ndarray:
        outs = [self._design(windows[:, :, o], marks) @ w for o, w in enumerate(self.weights)]
        return np.stack(outs, axis=2)  # (W, P, O)


# -- scoring a trained model on the test split ------------------------------------------------


@dataclass
class Assessment:
    """Test-split scores of the model and of each baseline, in original and scaled units."""

    metrics: dict[str, float]
    scaled_metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]
    per_series: dict[str, dict[str, float]] = field(default_factory=dict)
    horizon_mae: list[float] = field(default_factory=list)
    n_windows: int = 0
    # The first test series' truth and forecast at horizon step 1, for a plot.
    sample_true: list[float] = field(default_factory=list)
    sample_pred: list[float] = field(default_factory=list)

    def table(self) -> dict[str, dict[str, float]]:
        return {"informer": self.metrics, **self.baselines}


def assess(model: torch.nn.Module, data: PreparedData, batch_size: int = 256) -> Assessment:
    """Score ``model`` and the baselines on every test window of every series."""
    m = data.config.model
    out_idx = data.out_idx
    preds, trues, base = [], [], {name: [] for name in BASELINES}
    ridge = _fit_ridge(data)
    per_series = {}
    for s in data.series:
        lo, hi = s.rows("test")
        starts = window_starts(len(s.raw), lo, hi, m.seq_len, m.pred_len)
        pred_scaled = _predict(model, data, s, batch_size)  # (W, P, O)
        pred = data.scaler.inverse(pred_scaled, data.output_cols)
        true = np.stack([s.raw[st + m.seq_len : st + m.seq_len + m.pred_len, out_idx]
                         for st in starts])
        raw_out = s.raw[:, out_idx]
        for name, values in naive_baselines(raw_out, starts, m.seq_len, m.pred_len,
                                            seasonal_period(m.freq)).items():
            base[name].append(values)
        windows, marks = _ridge_inputs(s, starts, data)
        base["linear"].append(
            data.scaler.inverse(ridge.predict(windows, marks), data.output_cols)
        )
        preds.append(pred)
        trues.append(true)
        if s.sid is not None:
            per_series[s.sid] = regression_metrics(pred, true)

    pred, true = np.concatenate(preds), np.concatenate(trues)
    scale = data.scaler.std[out_idx]
    return Assessment(
        metrics=regression_metrics(pred, true),
        scaled_metrics={k: v for k, v in regression_metrics(
            pred / scale, true / scale).items() if k in ("mae", "mse")},
        baselines={name: regression_metrics(np.concatenate(v), true) for name, v in base.items()},
        per_series=per_series,
        horizon_mae=horizon_mae(pred, true).tolist(),
        n_windows=len(pred),
        sample_true=trues[0][:, 0, -1].tolist(),
        sample_pred=preds[0][:, 0, -1].tolist(),
    )


def _predict(model, data: PreparedData, s: SeriesArrays, batch_size: int) -> np.ndarray:
    dataset = data.series_dataset(s, "test")
    model.eval()
    outs = []
    with torch.inference_mode():
        for x_enc, m_enc, x_dec, m_dec, _ in DataLoader(dataset, batch_size=batch_size):
            outs.append(model(x_enc, m_enc, x_dec, m_dec).numpy())
    return np.concatenate(outs)


def _ridge_inputs(
    s: SeriesArrays, starts: np.ndarray, data: PreparedData
) -> tuple[np.ndarray, np.ndarray]:
    m = data.config.model
    idx = starts[:, None] + np.arange(m.seq_len)[None, :]  # (W, L)
    windows = s.scaled[:, data.out_idx][idx]  # (W, L, O)
    marks = s.marks[starts + m.seq_len]  # (W, F) calendar of the first forecast step
    return windows, marks


def _fit_ridge(data: PreparedData) -> RidgeBaseline:
    m = data.config.model
    xs, ms, ys = [], [], []
    for s in data.series:
        lo, hi = s.rows("train")
        starts = window_starts(len(s.raw), lo, hi, m.seq_len, m.pred_len)
        windows, marks = _ridge_inputs(s, starts, data)
        fut = starts[:, None] + m.seq_len + np.arange(m.pred_len)[None, :]  # (W, P)
        xs.append(windows)
        ms.append(marks)
        ys.append(s.scaled[:, data.out_idx][fut])
    return RidgeBaseline().fit(np.concatenate(xs), np.concatenate(ms), np.concatenate(ys))

"""PNG plots attached to every run: forecast against actual, loss curves, error by horizon."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402


def forecast_vs_actual(true: list[float], pred: list[float], path: Path, limit: int = 720) -> Path:
    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.plot(true[:limit], label="actual", linewidth=1)
    ax.plot(pred[:limit], label="forecast (1 step ahead)", linewidth=1)
    ax.set_xlabel("test step")
    ax.set_title("Test split: forecast vs actual")
    ax.legend()
    return _save(fig, path)


def loss_curves(train: list[float], val: list[float], path: Path, loss: str = "mse") -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    epochs = range(1, len(train) + 1)
    ax.plot(epochs, train, marker="o", label="train")
    ax.plot(epochs, val, marker="o", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{loss.upper()} (scaled)")
    ax.legend()
    return _save(fig, path)


def horizon_error(mae: list[float], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(range(1, len(mae) + 1), mae)
    ax.set_xlabel("horizon step")
    ax.set_ylabel("MAE (original units)")
    return _save(fig, path)


def monitor(series: dict, path: Path) -> Path:
    """Actuals with 1-step forecasts, and MAE and PSI per window of time, for one series."""
    fig, (top, mid, low) = plt.subplots(3, 1, figsize=(10, 7), sharex=False)
    actual, forecast = series["actual"], series["forecast"]
    top.plot(_times(actual["time"]), actual["value"], label="actual", linewidth=1)
    top.plot(_times(forecast["time"]), forecast["value"], label="forecast (1 step ahead)",
             linewidth=1)
    top.set_title(f"series {series['id']!r}" if series["id"] else "forecast vs actual")
    top.legend()
    acc = [p for p in series["accuracy"] if p["mae"] is not None]
    mid.plot(_times([p["time"] for p in acc]), [p["mae"] for p in acc], marker=".")
    mid.set_ylabel("MAE per window")
    low.plot(_times([p["time"] for p in series["drift"]]), [p["psi"] for p in series["drift"]],
             marker=".", color="tab:red")
    low.set_ylabel("PSI per window")
    return _save(fig, path)


def _times(values: list[str]):
    import pandas as pd  # imported late: most plots take plain lists

    return pd.to_datetime(values, format="ISO8601")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

"""A long-format file with several series trains one global model, scored and served per series.

Real steps end to end in this process (preprocess, train, evaluate) against a real MLflow store.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from informerflow import steps
from informerflow.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from informerflow.errors import RequestError
from informerflow.forecaster import Forecaster
from informerflow.pyfunc import load_forecaster

IDS = ("pod-a", "pod-b", "pod-c")


@pytest.fixture
def long_csv(tmp_path):
    rng = np.random.default_rng(0)
    parts = []
    for level, sid in enumerate(IDS):
        stamps = pd.date_range("2024-01-01", periods=400, freq="min")
        y = np.sin(np.arange(400) / 20) + rng.normal(0, 0.05, 400) + 3 * level
        parts.append(pd.DataFrame({"unique_id": sid, "ds": stamps, "y": y}))
    path = tmp_path / "pods.csv"
    pd.concat(parts).to_csv(path, index=False)
    return path


def test_global_model_scored_and_forecast_per_series(long_csv, tmp_path, mlflow_store):
    cfg = RunConfig(
        data=DataConfig(path=str(long_csv), target="y"),
        model=ModelConfig(seq_len=16, label_len=8, pred_len=4, d_model=16, n_heads=2, d_ff=32,
                          e_layers=1),
        train=TrainConfig(epochs=2, batch_size=32),
    )
    report = steps.preprocess(cfg, tmp_path / "ds")
    assert (report["series"], report["rows"], report["id_col"]) == (3, 1200, "unique_id")

    run_id = steps.train_step(tmp_path / "ds", tmp_path / "model")
    result = steps.evaluate_step(tmp_path / "ds", tmp_path / "model", run_id)
    # 20% of 400 rows = 80 test targets per series -> 77 windows of 4 steps; three series.
    assert result["n_windows"] == 3 * 77
    metrics = MlflowClient().get_run(run_id).data.metrics
    for sid in IDS:
        assert f"series_{sid}_mae" in metrics
    assert metrics["test_mae"] == pytest.approx(result["metrics"]["mae"])

    frame = pd.read_csv(long_csv, parse_dates=["ds"]).rename(columns={"ds": "timestamp"})
    window = frame.groupby("unique_id").tail(16).copy()
    window["timestamp"] = window["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S")
    forecaster = Forecaster.load(tmp_path / "model")
    out = forecaster.forecast(window)
    assert list(out["unique_id"].unique()) == list(IDS)
    assert len(out) == 3 * 4
    # Each series keeps its own level: a global model must not blur them together.
    levels = out.groupby("unique_id")["y"].mean()
    assert levels["pod-a"] < levels["pod-b"] < levels["pod-c"]
    # Same answers through the logged pyfunc model.
    logged = load_forecaster(result["model_uri"]).forecast(window)
    np.testing.assert_allclose(logged["y"], out["y"], rtol=1e-6)


def test_too_short_series_in_a_request_names_the_rule(long_csv, tmp_path, mlflow_store):
    cfg = RunConfig(
        data=DataConfig(path=str(long_csv), target="y"),
        model=ModelConfig(seq_len=16, label_len=8, pred_len=4, d_model=8, n_heads=2, d_ff=16,
                          e_layers=1),
        train=TrainConfig(epochs=1),
    )
    steps.preprocess(cfg, tmp_path / "ds")
    steps.train_step(tmp_path / "ds", tmp_path / "model")
    forecaster = Forecaster.load(tmp_path / "model")
    frame = pd.read_csv(long_csv).rename(columns={"ds": "timestamp"}).groupby("unique_id").tail(10)
    expected = "too few rows: the model needs the last 16 rows, got 10"
    with pytest.raises(RequestError, match=expected):
        forecaster.forecast(frame)

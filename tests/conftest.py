"""Shared fixtures: an isolated state directory with its own MLflow store, and tiny series."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from informerflow import state


@pytest.fixture(scope="session")
def _migrated_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store, migrated once: migrations take ~10 s, a copy 0.1 s."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    root = tmp_path_factory.mktemp("mlflow-template")
    SqlAlchemyStore(f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri())
    return root / "mlflow.db"


@pytest.fixture
def mlflow_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _migrated_mlflow_db: Path
) -> Iterator[str]:
    """Point the state dir and MLflow at a fresh SQLite store under ``tmp_path / "home"``."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(_migrated_mlflow_db, home / "mlflow.db")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    monkeypatch.setenv(state.ENV_HOME, str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri
    # Forget the store so later tests resolve their own (monkeypatch then restores the env).
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


@pytest.fixture
def make_series() -> Callable[..., object]:
    """Build a ``LoadedSeries`` from arrays, as ingestion would return it."""
    from informerflow.data.ingest import LoadedSeries

    def build(
        values: dict[str, np.ndarray],
        target: str,
        freq: str = "h",
        start: str = "2024-01-01",
        sha256: str = "0" * 64,
    ) -> LoadedSeries:
        n = len(values[target])
        cols = [c for c in values if c != target] + [target]  # target last, as ingest orders it
        frame = pd.DataFrame({"date": pd.date_range(start, periods=n, freq=freq)})
        for col in cols:
            frame[col] = np.asarray(values[col], dtype=np.float64)
        return LoadedSeries(
            frame=frame, source="synthetic.csv", sha256=sha256, time_col="date", target=target,
            value_cols=cols, id_col=None, freq=freq, tz=None,
        )

    return build


@pytest.fixture
def sine_series(make_series: Callable[..., object]) -> object:
    """400 hourly rows of a daily sine plus a little seeded noise, target ``y``."""
    t = np.arange(400)
    noise = np.random.default_rng(0).normal(0, 0.05, size=len(t))
    return make_series({"y": 10 + np.sin(2 * np.pi * t / 24) + noise}, target="y")


@pytest.fixture
def tiny_config() -> Callable[..., object]:
    """A RunConfig with a model small enough to train in a second on a CPU."""
    from informerflow.config import ModelConfig, RunConfig, TrainConfig

    def build(model: dict | None = None, train: dict | None = None) -> RunConfig:
        m = {"seq_len": 16, "label_len": 8, "pred_len": 4, "d_model": 8, "n_heads": 2,
             "d_ff": 16, "e_layers": 1, "d_layers": 1, "dropout": 0.0, "freq": "h"}
        t = {"epochs": 3, "batch_size": 16, "learning_rate": 1e-3, "patience": 3,
             "device": "cpu", "seed": 7, "loss": "mse"}
        return RunConfig(model=ModelConfig(**(m | (model or {}))),
                         train=TrainConfig(**(t | (train or {}))))

    return build


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run torch on one thread: tiny models on a shared 2-core box are ~10x slower with two."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True)
def _restore_mlflow_env() -> Iterator[None]:
    """Undo what ``mlflow.set_registry_uri`` writes to ``os.environ`` (it never removes it).

    Without this, one test's store leaks into every later test and into the subprocesses they
    start, which then read the registry of a store that no longer exists.
    """
    saved = {key: os.environ.get(key) for key in _MLFLOW_ENV}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value

"""What a training run leaves in MLflow when it is told to log less, or when it fails.

Real steps in this process (preprocess, train) against a real MLflow SQLite store, on a tiny
model. Divergence is real too: a learning rate of 1e6 makes the loss NaN within one epoch, and
halving it (the retry's safer configuration) still does, so both attempts fail for certain.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from informerflow import steps
from informerflow.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from informerflow.errors import ConfigError, TrainingError
from informerflow.train import retryable_failure, safer_config

NEVER_FINITE = "validation loss was never finite in 1 epochs"


@pytest.fixture
def hourly_csv(tmp_path):
    t = np.arange(300)
    y = 10 + np.sin(2 * np.pi * t / 24) + np.random.default_rng(0).normal(0, 0.05, 300)
    path = tmp_path / "hourly.csv"
    pd.DataFrame({"date": pd.date_range("2024-01-01", periods=300, freq="h"), "y": y}).to_csv(
        path, index=False)
    return path


def _config(path, **train) -> RunConfig:
    return RunConfig(
        data=DataConfig(path=str(path), target="y"),
        model=ModelConfig(seq_len=16, label_len=8, pred_len=4, d_model=8, n_heads=2, d_ff=16,
                          e_layers=1),
        train=TrainConfig(**({"epochs": 1, "batch_size": 16, "max_train_windows": 48,
                              "device": "cpu"} | train)),
        experiment="retry-test",
    )


def _runs(client: MlflowClient) -> list:
    exp = client.get_experiment_by_name("retry-test")
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def test_autolog_off_keeps_params_and_final_metrics_but_no_epoch_history(
    hourly_csv, tmp_path, mlflow_store, one_thread
):
    client = MlflowClient()
    ids = {}
    for autolog in (True, False):
        cfg = _config(hourly_csv, epochs=2, autolog=autolog)
        steps.preprocess(cfg, tmp_path / f"ds-{autolog}")
        ids[autolog] = steps.train_step(tmp_path / f"ds-{autolog}", tmp_path / f"m-{autolog}")
    for key in ("train_loss", "val_loss", "learning_rate"):
        assert [m.step for m in client.get_metric_history(ids[True], key)] == [1, 2]
        assert client.get_metric_history(ids[False], key) == []
    quiet = client.get_run(ids[False]).data
    assert quiet.params["train.autolog"] == "False" and quiet.params["model.seq_len"] == "16"
    assert {"best_epoch", "best_val_loss"} <= set(quiet.metrics)


def test_divergence_without_retry_leaves_one_failed_run(hourly_csv, tmp_path, mlflow_store,
                                                         one_thread):
    cfg = _config(hourly_csv, learning_rate=1e6)
    steps.preprocess(cfg, tmp_path / "ds")
    with pytest.raises(TrainingError, match=NEVER_FINITE):
        steps.train_step(tmp_path / "ds", tmp_path / "model")
    (run,) = _runs(MlflowClient())
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith(f"TrainingError: {NEVER_FINITE}")
    assert not {"retried_as", "retry_reason"} & set(run.data.tags)


def test_divergence_with_retry_fails_parent_then_nested_child_with_its_reason(
    hourly_csv, tmp_path, mlflow_store, one_thread
):
    cfg = _config(hourly_csv, learning_rate=1e6, retry_on_failure=True)
    steps.preprocess(cfg, tmp_path / "ds")
    with pytest.raises(TrainingError, match="training failed twice: first with non-finite loss, "
                                            r"then in the retry \(run \w+\) with TrainingError"):
        steps.train_step(tmp_path / "ds", tmp_path / "model")

    client = MlflowClient()
    parent, child = _runs(client)  # exactly two: the retry happens once
    pid, cid = parent.info.run_id, child.info.run_id
    assert (parent.info.status, child.info.status) == ("FAILED", "FAILED")
    assert child.data.tags["mlflow.parentRunId"] == pid and child.info.run_name == "retry"
    assert parent.data.tags["retried_as"] == cid and child.data.tags["retry_of"] == pid
    assert child.data.tags["retry_reason"] == (
        f"non-finite loss in run {pid}; retrying once with batch_size 16 -> 8 and "
        "learning_rate 1e+06 -> 500000")
    for run in (parent, child):
        assert run.data.tags["error"].startswith(f"TrainingError: {NEVER_FINITE}")
        traceback = client.download_artifacts(run.info.run_id, "error/traceback.txt")
        assert "TrainingError" in open(traceback).read()
    assert (parent.data.params["train.batch_size"], parent.data.params["train.learning_rate"]) \
        == ("16", "1000000.0")
    assert (child.data.params["train.batch_size"], child.data.params["train.learning_rate"]) \
        == ("8", "500000.0")


def test_only_divergence_and_out_of_memory_are_worth_retrying():
    with pytest.raises(RuntimeError, match="can't allocate memory") as oom:
        torch.empty(2**62, dtype=torch.uint8)  # a real allocator failure, nothing allocated
    assert retryable_failure(oom.value) == "out of memory"
    assert retryable_failure(TrainingError(NEVER_FINITE)) == "non-finite loss"
    assert retryable_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    assert retryable_failure(ValueError("out of memory")) is None


def test_safer_config_halves_batch_and_rate_but_keeps_a_batch():
    cfg = TrainConfig(batch_size=33, learning_rate=1e-3, epochs=7)
    assert safer_config(cfg) == dataclasses.replace(cfg, batch_size=16, learning_rate=5e-4)
    assert safer_config(TrainConfig(batch_size=1)).batch_size == 1


def test_switches_must_be_booleans():
    cfg = RunConfig(train=TrainConfig(autolog="no"))
    with pytest.raises(ConfigError, match=r"train.autolog must be one of True, False; got 'no'"):
        cfg.validate()

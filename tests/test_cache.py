"""Opt-in step caching: a rerun with the same config and data skips preprocessing, and only that.

Real throughout: `informerflow run --cache` in a subprocess, KFP's local runner with its file
cache, each step in its own subprocess, and an MLflow SQLite store in a temporary directory.
Two full runs of a tiny model on a 400-row file; a third run on changed data is stopped as soon
as preprocessing has been decided, which is all that run has to show.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from informerflow import steps
from informerflow.config import DataConfig, RunConfig
from informerflow.errors import DataError

EXPERIMENT = "informerflow-hourly"
FLAGS = ["--target", "y", "--seq-len", "16", "--label-len", "8", "--pred-len", "4",
         "--d-model", "8", "--n-heads", "2", "--d-ff", "16", "--e-layers", "1", "--epochs", "1",
         "--batch-size", "16", "--max-train-windows", "64", "--no-deploy", "--cache",
         "--no-autolog"]


def _write_series(path: Path, bump: float = 0.0) -> Path:
    t = np.arange(400)
    y = 10 + np.sin(2 * np.pi * t / 24) + np.random.default_rng(0).normal(0, 0.05, 400)
    y[-1] += bump  # a changed last value changes the file's sha256, not its shape
    frame = pd.DataFrame({"date": pd.date_range("2024-01-01", periods=400, freq="h"), "y": y})
    frame.to_csv(path, index=False)
    return path


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # One torch thread per step: on a shared 2-core box that is several times faster.
    env.update(INFORMERFLOW_HOME=str(home), COLUMNS="200", OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    return env


def _cli_run(home: Path, data: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "informerflow.cli", "run", "--data", str(data),
                           *FLAGS], env=_env(home), capture_output=True, text=True,
                          timeout=900, cwd=home)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, _migrated_mlflow_db):
    home = tmp_path_factory.mktemp("home")
    shutil.copy(_migrated_mlflow_db, home / "mlflow.db")
    data = _write_series(home / "hourly.csv")
    first = _cli_run(home, data)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = _cli_run(home, data)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return home, first.stdout, second.stdout


def test_rerun_reuses_preprocessing_and_trains_again(two_runs):
    home, first, second = two_runs
    assert "done preprocess" in first and "cached" not in first
    assert "cached preprocess" in second and "done preprocess" not in second
    for out in (first, second):
        assert "done train" in out and "done evaluate" in out and "done register" in out

    # KFP ran no preprocess task in the second run: its outputs hold only the later steps.
    first_dir, second_dir = sorted((home / "pipeline_runs").iterdir())
    assert [p.name for p in first_dir.glob("outputs/*/preprocess-op")] == ["preprocess-op"]
    assert list(second_dir.glob("outputs/*/preprocess-op")) == []
    assert [p.name for p in second_dir.glob("outputs/*/train-op")] == ["train-op"]
    # Only preprocess may be cached; train, evaluate, register and deploy opt out.
    assert len(list((home / "kfp_cache").glob("*.json"))) == 1


def test_both_runs_are_recorded_and_share_the_first_runs_dataset(two_runs):
    home, _, _ = two_runs
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    try:
        client = MlflowClient()
        exp = client.get_experiment_by_name(EXPERIMENT)
        runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
        assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
        stamps = [mlflow.artifacts.load_dict(f"runs:/{r.info.run_id}/ingest_report.json")
                  ["preprocessed_at"] for r in runs]
        # The second run trained on the very dataset the first run's preprocess wrote.
        assert stamps[0] == stamps[1]
        assert runs[0].data.tags["data.sha256"] == runs[1].data.tags["data.sha256"]
        versions = client.search_model_versions(f"name='{EXPERIMENT}'")
        assert sorted(int(v.version) for v in versions) == [1, 2]
        # --no-autolog reached the training step: final metrics, no per-epoch history.
        assert runs[1].data.params["train.autolog"] == "False"
        assert client.get_metric_history(runs[1].info.run_id, "val_loss") == []
        assert "best_val_loss" in runs[1].data.metrics
    finally:
        mlflow.set_tracking_uri(None)


def test_report_of_the_rerun_marks_preprocess_cached(two_runs):
    home, _, second = two_runs
    (line,) = [ln for ln in second.splitlines() if ln.startswith("Report: ")]
    page = Path(line.removeprefix("Report: ")).read_text()
    assert 'data-step="preprocess" data-state="cached"' in page
    assert 'data-step="train" data-state="succeeded"' in page
    assert 'data-step="deploy" data-state="skipped"' in page


def test_changed_data_at_the_same_path_is_preprocessed_again(two_runs):
    home, _, _ = two_runs
    data = _write_series(home / "hourly.csv", bump=0.5)
    proc = subprocess.Popen([sys.executable, "-m", "informerflow.cli", "run", "--data",
                             str(data), *FLAGS], env=_env(home), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=home,
                            start_new_session=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            # The first step to start settles it: preprocess again, or train on a cached dataset.
            if line.startswith("> "):
                break
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the rest of this run proves nothing new
        proc.wait(timeout=60)
    assert seen and seen[-1].startswith("> preprocess"), "".join(seen)[-3000:]


def test_preprocess_refuses_a_file_changed_since_it_was_fingerprinted(tmp_path):
    cfg = RunConfig(data=DataConfig(path=str(_write_series(tmp_path / "hourly.csv")),
                                    target="y"))
    with pytest.raises(DataError, match=r"hourly.csv changed after it was checked: expected "
                                        r"sha256 000000000000\.\.\., found [0-9a-f]{12}\.\.\."):
        steps.preprocess(cfg, tmp_path / "ds", expected_sha256="0" * 64)
    assert not (tmp_path / "ds" / "series.parquet").exists()

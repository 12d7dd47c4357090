"""The main job end to end: `informerflow run` on the bundled data through KFP's local runner.

Everything is real: the CLI in a subprocess, the five KFP components in their own subprocesses,
an MLflow SQLite store in a temporary directory, and the model server on a free loopback port.
The model is tiny and trains one short epoch so the whole test stays around a minute or two.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

EXPERIMENT = "informerflow-processed_data"
TINY = ["--seq-len", "24", "--label-len", "12", "--pred-len", "6", "--d-model", "16",
        "--n-heads", "2", "--d-ff", "32", "--e-layers", "2", "--epochs", "1",
        "--max-train-windows", "256"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(args: list[str], home: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    env["INFORMERFLOW_HOME"] = str(home)
    env["COLUMNS"] = "200"
    return subprocess.run([sys.executable, "-m", "informerflow.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=home)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    port = _free_port()
    result = _cli(["run", *TINY, "--port", str(port), "--endpoint", "e2e"], home)
    yield home, port, result
    _cli(["endpoints", "stop", "e2e"], home)


def test_run_completes_and_prints_the_summary(finished_run):
    home, port, result = finished_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for step in ("preprocess", "train", "evaluate", "register", "deploy"):
        assert f"done {step}" in out
    assert "filled 1 missing min step in cpu_utilization" in out  # the bundled 2-minute gap
    for name in ("informer", "persistence", "seasonal_naive", "window_mean", "linear"):
        assert name in out
    assert f"Registered {EXPERIMENT} version 1 as champion" in out
    assert f"http://127.0.0.1:{port}" in out
    assert "curl -s -H 'Content-Type: application/json' -d @" in out
    assert "informerflow ui" in out


def test_endpoint_answers_and_matches_pyfunc_in_a_fresh_process(finished_run):
    home, port, _ = finished_run
    body_file = home / "requests" / "e2e.json"
    body = json.loads(body_file.read_text())
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v2/models/{EXPERIMENT}/infer", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    outputs = {o["name"]: o["data"] for o in answer["outputs"]}
    assert len(outputs["cpu_utilization"]) == 6
    # The last window of the bundled data ends at 1970-01-13 23:59; forecasts continue per minute.
    assert outputs["timestamp"][0].startswith("1970-01-14T00:00:00")

    script = f"""
import json, mlflow, pandas as pd
mlflow.set_tracking_uri("sqlite:///{home / 'mlflow.db'}")
mlflow.set_registry_uri("sqlite:///{home / 'mlflow.db'}")
body = json.load(open("{body_file}"))
cols = {{i["name"]: i["data"] for i in body["inputs"]}}
model = mlflow.pyfunc.load_model("models:/{EXPERIMENT}@champion")
print(json.dumps(model.predict(pd.DataFrame(cols))["cpu_utilization"].tolist()))
"""
    fresh = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=300, cwd=home)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    pyfunc_values = json.loads(fresh.stdout.strip().splitlines()[-1])
    assert pyfunc_values == pytest.approx(outputs["cpu_utilization"], rel=1e-6, abs=1e-9)


def test_store_holds_params_losses_metrics_baselines_and_alias(finished_run):
    home, _, _ = finished_run
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{home / 'mlflow.db'}")
    try:
        client = MlflowClient()
        exp = client.get_experiment_by_name(EXPERIMENT)
        (run,) = client.search_runs([exp.experiment_id])
        params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
        assert params["model.seq_len"] == "24" and params["train.epochs"] == "1"
        assert params["data.gaps"] == "interpolate"
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 1
        assert len(client.get_metric_history(run.info.run_id, "val_loss")) == 1
        for key in ("test_mae", "test_mse", "test_rmse", "test_r2", "test_mape",
                    "baseline_persistence_mae", "baseline_seasonal_naive_mae",
                    "baseline_window_mean_mae", "baseline_linear_mae"):
            assert key in metrics
        # 20% of 18,720 rows is 3,744 test targets; with pred_len 6 that is 3,739 windows.
        assert metrics["test_windows"] == 3739
        assert tags["data.sha256"] == (
            "ad4bc4850e48076d9bc49f6a13b548fdf6f475400113a00b8aa75b4ade331f0d")
        assert "test_scaled_mae" in metrics and "best_val_loss" in metrics
        assert tags["code.version"] and "code.git_commit" in tags
        assert tags["code.git_dirty"] in ("true", "false")
        (dataset_input,) = run.inputs.dataset_inputs
        assert dataset_input.dataset.digest == tags["data.sha256"][:36]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"run_config.json", "ingest_report.json", "plots", "evaluation.json"} <= artifacts
        assert tags["model_uri"].startswith("models:/m-")  # MLflow 3 keeps models beside runs
        plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        assert plots == {"plots/loss_curves.png", "plots/forecast_vs_actual.png",
                         "plots/error_by_horizon.png"}
        version = client.get_model_version_by_alias(EXPERIMENT, "champion")
        assert version.run_id == run.info.run_id
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


def test_endpoints_lists_and_stops_the_endpoint(tmp_path, finished_run):
    home, port, _ = finished_run
    listed = _cli(["endpoints"], home)
    assert "e2e" in listed.stdout and "running" in listed.stdout
    stopped = _cli(["endpoints", "stop", "e2e"], home)
    assert stopped.returncode == 0, stopped.stderr
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5)

"""Local endpoints: real detached servers on loopback ports, records in a temporary state dir.

The model is a tiny untrained Informer saved as a local MLflow model directory, so these tests
need no tracking store.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from informerflow.errors import ConfigError, DeploymentError
from informerflow.serving import endpoints
from informerflow.serving.endpoints import (
    Endpoint,
    endpoint_logs,
    list_endpoints,
    start_endpoint,
    stop_endpoint,
)

TOKEN = "endpoint-token"


def build_model_dir(path: Path) -> Path:
    """Save a tiny forecaster as an MLflow pyfunc model directory, as log_forecaster logs it."""
    import mlflow
    import torch

    from informerflow.config import ModelConfig, RunConfig
    from informerflow.data.windows import Scaler
    from informerflow.forecaster import Forecaster, ForecastSpec
    from informerflow.model import build_model
    from informerflow.pyfunc import ARTIFACT, ENTRY, PACKAGE_DIR, PIP_REQUIREMENTS

    torch.manual_seed(0)
    cfg = RunConfig(model=ModelConfig(seq_len=8, label_len=4, pred_len=2, d_model=8, n_heads=2,
                                      e_layers=1, d_layers=1, d_ff=16, freq="h"))
    spec = ForecastSpec(config=cfg, input_cols=["load"], output_cols=["load"], target="load",
                        freq="h")
    scaler = Scaler.fit(np.arange(100.0)[:, None], ["load"])
    saved = Forecaster(build_model(cfg.model), spec, scaler).save(path / "forecaster")
    mlflow.pyfunc.save_model(
        str(path / "model"), python_model=str(ENTRY), artifacts={ARTIFACT: str(saved)},
        code_paths=[str(PACKAGE_DIR)], pip_requirements=PIP_REQUIREMENTS)
    return path / "model"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("INFORMERFLOW_HOME", str(tmp_path / "home"))
    yield tmp_path / "home"
    for endpoint in list_endpoints():  # never leave a server behind, even when a test fails
        stop_endpoint(endpoint.name)


def forecast(url: str, token: str | None) -> tuple[int, dict]:
    stamps = [f"2024-01-01T{h:02d}:00:00" for h in range(8)]
    body = {"instances": [{"timestamp": t, "load": float(i)} for i, t in enumerate(stamps)]}
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{url}/v1/models/informer:predict",
                                     data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_start_list_replace_and_stop(model_dir, home):
    port = free_port()
    first = start_endpoint("demo", str(model_dir), port, token=TOKEN)
    assert (first.name, first.url, first.port, first.host) == (
        "demo", f"http://127.0.0.1:{port}", port, "127.0.0.1")
    assert (first.model_uri, first.model_name, first.model_version) == (
        str(model_dir), "informer", None)
    assert json.loads((home / "endpoints" / "demo.json").read_text())["pid"] == first.pid
    # The token reaches the server through its environment, never its visible command line.
    assert TOKEN.encode() not in Path(f"/proc/{first.pid}/cmdline").read_bytes()
    assert "token" not in (home / "endpoints" / "demo.json").read_text()

    status, answer = forecast(first.url, TOKEN)
    assert status == 200
    assert [p["timestamp"] for p in answer["predictions"]] == [
        "2024-01-01T08:00:00", "2024-01-01T09:00:00"]
    assert forecast(first.url, None)[0] == 401

    with pytest.raises(DeploymentError, match=rf"port {port} on 127.0.0.1 is in use by "
                                              r"endpoint 'demo'; choose another port"):
        start_endpoint("other", str(model_dir), port)

    second_port = free_port()
    second = start_endpoint("demo", str(model_dir), second_port)
    assert second.pid != first.pid
    assert not endpoints._is_our_server(first.pid)
    listed = list_endpoints()
    assert [(e.name, e.port, e.status, e.alive) for e in listed] == [
        ("demo", second_port, "running", True)]
    assert forecast(second.url, None)[0] == 200

    stopped = stop_endpoint("demo")
    assert (stopped.name, stopped.status) == ("demo", "stopped")
    assert not endpoints._is_our_server(second.pid)
    assert list_endpoints() == []
    assert f"serving on http://127.0.0.1:{second_port}" in endpoint_logs("demo", lines=200)


def test_a_tampered_model_fails_the_start_with_the_log_tail(model_dir, tmp_path):
    import shutil

    tampered = tmp_path / "tampered"
    shutil.copytree(model_dir, tampered)
    weights = tampered / "artifacts" / "forecaster" / "weights.pt"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 0x01]))  # flip one bit

    with pytest.raises(DeploymentError, match=r"the server exited with code 3 before it was "
                                              r"ready; last log lines") as caught:
        start_endpoint("bad", str(tampered), free_port())
    assert "weights.pt changed since the model was logged (sha256 mismatch)" in str(caught.value)
    assert list_endpoints() == []


def test_a_server_not_ready_in_time_is_killed(model_dir):
    with pytest.raises(DeploymentError, match=r"was not ready within 0.3s; last log lines"):
        start_endpoint("slow", str(model_dir), free_port(), timeout=0.3)
    assert list_endpoints() == []
    assert "informerflow.serving" in endpoint_logs("slow")


def test_port_held_by_another_process(model_dir):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(DeploymentError, match=rf"port {port} on 127.0.0.1 is in use by "
                                                  r"another process"):
            start_endpoint("busy", str(model_dir), port)


def test_dead_endpoints_are_marked_and_can_be_cleared(home):
    record = Endpoint(name="gone", url="http://127.0.0.1:1", pid=dead_pid(), port=1,
                      host="127.0.0.1", model_uri="models:/x@champion", model_name="x",
                      model_version="3", started="2024-01-01T00:00:00+00:00", log="gone.log")
    (home / "endpoints").mkdir(parents=True)
    (home / "endpoints" / "gone.json").write_text(record.to_json())

    [listed] = list_endpoints()
    assert (listed.name, listed.model_version, listed.status, listed.alive) == (
        "gone", "3", "dead", False)
    assert stop_endpoint("gone").status == "stopped"
    assert list_endpoints() == []


def test_a_foreign_pid_is_never_signalled(home):
    # Our own pid is alive but is not a model server: stopping must not signal it.
    record = Endpoint(name="mine", url="http://127.0.0.1:1", pid=os.getpid(), port=1,
                      host="127.0.0.1", model_uri="m", model_name="m", model_version=None,
                      started="2024-01-01T00:00:00+00:00", log="mine.log")
    (home / "endpoints").mkdir(parents=True)
    (home / "endpoints" / "mine.json").write_text(record.to_json())
    assert list_endpoints()[0].status == "dead"
    stop_endpoint("mine")
    assert list_endpoints() == []


def test_unknown_names_and_bad_input():
    with pytest.raises(DeploymentError, match=r"no endpoint named 'nope' \(recorded endpoints: "
                                              r"none\)"):
        stop_endpoint("nope")
    with pytest.raises(DeploymentError, match=r"no log for endpoint 'nope': .*nope.log does not "
                                              r"exist"):
        endpoint_logs("nope")
    with pytest.raises(ConfigError, match=r"endpoint name '\.\./x' is not allowed: use 1-63 "
                                          r"letters"):
        start_endpoint("../x", "models:/x@champion", 8080)
    with pytest.raises(ConfigError, match=r"port must be in 1\.\.65535, got 70000"):
        start_endpoint("ok", "models:/x@champion", 70000)

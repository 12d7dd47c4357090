"""The KFP definition compiles to cluster YAML with the requested image and no local secrets,
and `informerflow pipeline submit` sends that same definition to a Kubeflow Pipelines API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from informerflow.pipeline import SECRET_OPTIONAL, compile_pipeline

STEPS = ["preprocess-op", "train-op", "evaluate-op", "register-op", "deploy-op"]


def _compiled(path, image: str = "informerflow:0.1.0") -> tuple[dict, dict]:
    """The pipeline spec and the Kubernetes platform spec of a freshly compiled YAML."""
    spec, platform = yaml.safe_load_all(compile_pipeline(path, image=image).read_text())
    return spec, platform


def test_compiled_yaml_has_the_five_steps_in_order_with_the_image(tmp_path):
    spec, _ = _compiled(tmp_path / "pipeline.yaml", image="registry.test/informerflow:9")
    tasks = spec["root"]["dag"]["tasks"]
    assert sorted(tasks) == sorted(STEPS)
    for before, after in zip(STEPS, STEPS[1:], strict=False):
        assert before in tasks[after].get("dependentTasks", []), (before, after)
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.test/informerflow:9"}
    # Components must not pip-install kfp at start-up (no network needed on the cluster).
    commands = " ".join(" ".join(e["container"]["command"])
                        for e in spec["deploymentSpec"]["executors"].values())
    assert "pip install" not in commands


def test_no_value_of_the_compiling_environment_lands_in_the_yaml(tmp_path, monkeypatch):
    secrets = {
        "MLFLOW_TRACKING_TOKEN": "tok-5f1c2e9a77d04b",
        "AWS_SECRET_ACCESS_KEY": "aws-b3c1d0e8f2a94c",
        "MLFLOW_TRACKING_PASSWORD": "pw-0a9b8c7d6e5f41",
        "INFORMERFLOW_TOKEN": "bearer-77e1c0d2a3b4",
    }
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    text = compile_pipeline(tmp_path / "p.yaml").read_text()
    for value in secrets.values():
        assert value not in text


def test_only_preprocess_may_be_cached_and_it_is_keyed_on_the_data(tmp_path):
    spec, _ = _compiled(tmp_path / "p.yaml")
    tasks = spec["root"]["dag"]["tasks"]
    cached = {name for name, task in tasks.items()
              if task.get("cachingOptions", {}).get("enableCache")}
    # Later steps write MLflow runs, versions and servers: a cached result would be stale.
    assert cached == {"preprocess-op"}
    assert sorted(tasks["preprocess-op"]["inputs"]["parameters"]) == ["config_json",
                                                                      "data_sha256"]
    assert spec["root"]["inputDefinitions"]["parameters"]["data_sha256"]["defaultValue"] == ""


def test_every_step_reads_tracking_settings_from_a_secret_by_reference(tmp_path):
    spec, platform = _compiled(tmp_path / "p.yaml")
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert sorted(executors) == sorted(f"exec-{step}" for step in STEPS)
    for name, executor in executors.items():
        required, optional = executor["secretAsEnv"]
        for ref in (required, optional):
            # The Secret's name is a pipeline parameter; its values never enter the YAML.
            assert ref["secretNameParameter"] == {"componentInputParameter": "tracking_secret"}
            assert all(k["secretKey"] == k["envVar"] for k in ref["keyToEnv"])
        assert (required["optional"], optional["optional"]) == (False, True), name
        assert [k["envVar"] for k in required["keyToEnv"]] == ["MLFLOW_TRACKING_URI"]
        assert tuple(k["envVar"] for k in optional["keyToEnv"]) == SECRET_OPTIONAL
    default = spec["root"]["inputDefinitions"]["parameters"]["tracking_secret"]["defaultValue"]
    assert default == "informerflow-tracking"


class _FakeKfpApi(BaseHTTPRequestHandler):
    """The v2beta1 routes `kfp.Client.create_run_from_pipeline_package` calls, recorded.

    A fake because a real Kubeflow Pipelines API needs a Kubernetes cluster with its database
    and object store, which cannot run here; kfp.Client itself is real, and so is every byte it
    sends. The fake knows no experiments, creates "exp-7" and answers every run with "run-42".
    """

    requests: list[dict] = []

    def _answer(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 - the name http.server dispatches to
        self.requests.append({"method": "GET", "path": self.path})
        if self.path == "/apis/v2beta1/healthz":
            self._answer({"multi_user": False})
        else:
            self._answer({"experiments": []})

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        self.requests.append({"method": "POST", "path": self.path, "body": body})
        if self.path == "/apis/v2beta1/experiments":
            self._answer({"experiment_id": "exp-7", "display_name": body["display_name"]})
        else:
            self._answer({"run_id": "run-42", "experiment_id": body.get("experiment_id"),
                          "display_name": body.get("display_name")})

    def log_message(self, *args):  # keep pytest's output clean
        pass


@pytest.fixture
def fake_kfp():
    _FakeKfpApi.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeKfpApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", _FakeKfpApi.requests
    server.shutdown()
    server.server_close()


def _submit(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "INFORMERFLOW_HOME": str(tmp_path), "COLUMNS": "200",
           "MLFLOW_TRACKING_TOKEN": "tok-9d8c7b6a5f4e"}
    return subprocess.run([sys.executable, "-m", "informerflow.cli", "pipeline", "submit", *args],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)


def test_submit_sends_the_compiled_pipeline_and_the_config(fake_kfp, tmp_path):
    url, requests = fake_kfp
    config = tmp_path / "run_config.json"
    config.write_text(json.dumps({"model": {"seq_len": 48, "label_len": 24},
                                  "train": {"epochs": 2}}))
    done = _submit(["--host", url, "--config", str(config), "--data", "/mnt/data/pods.csv",
                    "--image", "registry.test/informerflow:9", "--experiment", "nightly",
                    "--run-name", "nightly-1"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"submitted run run-42 to experiment 'nightly': {url}/#/runs/details/run-42" \
        in done.stdout

    assert [(r["method"], r["path"].split("?")[0]) for r in requests] == [
        ("GET", "/apis/v2beta1/healthz"), ("GET", "/apis/v2beta1/experiments"),
        ("POST", "/apis/v2beta1/experiments"), ("POST", "/apis/v2beta1/runs")]
    _, _, create_exp, create_run = requests
    assert create_exp["body"]["display_name"] == "nightly"
    assert create_run["path"] == "/apis/v2beta1/runs"
    run = create_run["body"]
    assert (run["experiment_id"], run["display_name"]) == ("exp-7", "nightly-1")
    # The very pipeline `pipeline compile` writes, with the requested image.
    expected, platform = _compiled(tmp_path / "p.yaml", "registry.test/informerflow:9")
    sent = run["pipeline_spec"]["pipeline_spec"]
    assert sent["root"]["dag"]["tasks"].keys() == expected["root"]["dag"]["tasks"].keys()
    assert sent["deploymentSpec"] == expected["deploymentSpec"]
    assert run["pipeline_spec"]["platform_spec"] == platform
    # Without --cache no task may reuse outputs on the cluster.
    assert not any(t.get("cachingOptions", {}).get("enableCache")
                   for t in sent["root"]["dag"]["tasks"].values())
    params = run["runtime_config"]["parameters"]
    cfg = json.loads(params["config_json"])
    assert (cfg["model"]["seq_len"], cfg["train"]["epochs"]) == (48, 2)
    assert cfg["data"]["path"] == "/mnt/data/pods.csv"
    assert params["deploy_endpoint"] is False and params["data_sha256"] == ""
    assert params["tracking_secret"] == "informerflow-tracking"
    assert "tok-9d8c7b6a5f4e" not in json.dumps(requests)


def test_submit_with_cache_fingerprints_the_data_here(fake_kfp, tmp_path):
    url, requests = fake_kfp
    done = _submit(["--host", url, "--cache", "--tracking-secret", "team-mlflow"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run = requests[-1]["body"]
    assert run["runtime_config"]["parameters"]["tracking_secret"] == "team-mlflow"
    # The bundled series is readable here, so its fingerprint keys the cluster's cache.
    assert run["runtime_config"]["parameters"]["data_sha256"] == (
        "ad4bc4850e48076d9bc49f6a13b548fdf6f475400113a00b8aa75b4ade331f0d")
    sent = run["pipeline_spec"]["pipeline_spec"]
    cached = {n for n, t in sent["root"]["dag"]["tasks"].items()
              if t.get("cachingOptions", {}).get("enableCache")}
    assert cached == {"preprocess-op"}


def test_submit_with_cache_refuses_data_it_cannot_read(fake_kfp, tmp_path):
    url, requests = fake_kfp
    done = _submit(["--host", url, "--cache", "--data", "/mnt/nowhere/pods.csv"], tmp_path)
    assert done.returncode != 0
    assert "--cache keys preprocessing on the data's sha256" in done.stderr
    assert requests == []


def test_submit_to_an_unreachable_api_says_so(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        done = _submit(["--host", f"http://127.0.0.1:{s.getsockname()[1]}"], tmp_path)
    assert done.returncode != 0
    assert "cannot reach Kubeflow Pipelines at http://127.0.0.1:" in done.stderr

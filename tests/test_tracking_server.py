"""A team setup for real: `informerflow tracking-server` on PostgreSQL, and a run tracked there.

PostgreSQL is Debian's package, installed by `.ci/run`; this test starts a private cluster in a
temporary directory on a free loopback port, so it touches no other database.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow
import psycopg2
import pytest
from mlflow import MlflowClient

from informerflow import steps
from informerflow.config import ModelConfig, RunConfig, TrainConfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name)]
    if not found[-1]:
        pytest.fail(f"PostgreSQL's {name} is not installed; .ci/run installs Debian's postgresql")
    return found[-1]


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb refuses to run as root; CI runs as root, a developer usually does not.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def postgres():
    root = Path(tempfile.mkdtemp(prefix="informerflow-pg-"))
    root.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = _free_port()
    data = root / "data"
    subprocess.run(_as_postgres([_pg_bin("initdb"), "-D", str(data), "-A", "trust",
                                 "-U", "postgres", "-E", "UTF8", "--no-sync"]),
                   check=True, capture_output=True, timeout=120)
    subprocess.run(_as_postgres([
        _pg_bin("pg_ctl"), "-D", str(data), "-l", str(root / "pg.log"), "-w", "start",
        "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off",
    ]), check=True, capture_output=True, timeout=120)
    yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    subprocess.run(_as_postgres([_pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
                   capture_output=True, timeout=60)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def tracking_server(postgres, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    port = _free_port()
    env = {**os.environ, "INFORMERFLOW_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(home / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "informerflow.cli", "tracking-server", "--port", str(port),
         "--backend-store-uri", postgres.replace("postgresql://", "postgresql+psycopg2://"),
         "--artifacts-destination", str(home / "artifacts")],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            if server.poll() is not None:
                pytest.fail((home / "server.log").read_text()[-3000:])
            time.sleep(1)
    else:
        pytest.fail("tracking server not ready in 180 s: " + (home / "server.log").read_text())
    yield url, home
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)
    log.close()


def test_training_run_lands_in_postgres_and_reads_back(
    postgres, tracking_server, tmp_path, monkeypatch
):
    url, home = tracking_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("INFORMERFLOW_HOME", str(tmp_path))
    cfg = RunConfig(
        model=ModelConfig(seq_len=16, label_len=8, pred_len=4, d_model=8, n_heads=2, d_ff=16,
                          e_layers=1),
        train=TrainConfig(epochs=2, max_train_windows=128),
        experiment="team-experiment",
    )
    steps.preprocess(cfg, tmp_path / "ds")
    run_id = steps.train_step(tmp_path / "ds", tmp_path / "model")
    try:
        mlflow.set_tracking_uri(url)
        run = MlflowClient().get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.params["model.seq_len"] == "16"
        history = MlflowClient().get_metric_history(run_id, "val_loss")
        assert [m.step for m in history] == [1, 2]
        assert run.data.tags["data.sha256"].startswith("ad4bc485")
        experiment = MlflowClient().get_experiment(run.info.experiment_id)
        assert experiment.name == "team-experiment"
    finally:
        mlflow.set_tracking_uri(None)
    # The store really is PostgreSQL: the run's row is in its tables.
    with psycopg2.connect(postgres) as conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_uuid = %s", (run_id,))
        assert cur.fetchone() == ("FINISHED",)

"""The pipeline run's HTML report, rendered by headless Chromium and read back from its DOM.

The report's input is a real tiny run: the five steps in this process (preprocess, train,
evaluate, register, and deploy to a local endpoint on a free loopback port) against a real
MLflow SQLite store, their progress events fed to the runner's own display and report writer.
Only the KFP subprocesses are left out; tests/test_cache.py covers those. Chromium is Debian's
package (`.ci/run` installs it); it opens the file with networking features off.
"""

from __future__ import annotations

import base64
import contextlib
import io
import re
import shutil
import socket
import subprocess
from dataclasses import asdict
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from rich.console import Console

from informerflow import progress, runner, state, steps
from informerflow.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from informerflow.errors import DataError

CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync"]


def _chromium(page: Path, profile: Path, *args: str) -> str:
    if not shutil.which("chromium"):
        pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
    done = subprocess.run([*CHROMIUM, f"--user-data-dir={profile}", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(path: Path) -> RunConfig:
    return RunConfig(
        data=DataConfig(path=str(path), target="y"),
        model=ModelConfig(seq_len=16, label_len=8, pred_len=4, d_model=8, n_heads=2, d_ff=16,
                          e_layers=1),
        train=TrainConfig(epochs=2, batch_size=16, max_train_windows=64, device="cpu"),
        experiment="report-test", endpoint="report-e2e", port=_free_port(),
    )


def _replay(buffer: io.StringIO, cfg: RunConfig) -> runner._Display:
    """Feed the captured progress events to the display `informerflow run` uses."""
    display = runner._Display(Console(file=io.StringIO()), cfg.train.epochs)
    for line in buffer.getvalue().splitlines():
        event = progress.parse(line)
        if event is not None:
            display(event)
    return display


@pytest.fixture(scope="module")
def store(tmp_path_factory, _migrated_mlflow_db):
    root = tmp_path_factory.mktemp("report")
    home = root / "home"
    home.mkdir()
    shutil.copy(_migrated_mlflow_db, home / "mlflow.db")
    t = np.arange(300)
    y = 10 + np.sin(2 * np.pi * t / 24) + np.random.default_rng(1).normal(0, 0.05, 300)
    pd.DataFrame({"date": pd.date_range("2024-01-01", periods=300, freq="h"), "y": y}).to_csv(
        root / "hourly.csv", index=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(state.ENV_HOME, str(home))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
        mp.setenv(progress.ENV_FLAG, "1")
        yield root
    torch.set_num_threads(threads)
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


@pytest.fixture(scope="module")
def finished(store):
    """A run through deploy, its report, and Chromium's DOM and screenshot of it."""
    cfg = _config(store / "hourly.csv")
    events = io.StringIO()
    with contextlib.redirect_stdout(events):
        steps.preprocess(cfg, store / "ds")
        run_id = steps.train_step(store / "ds", store / "model")
        evaluation = steps.evaluate_step(store / "ds", store / "model", run_id)
        registration = steps.register_step(run_id)
        steps.deploy_step(asdict(registration), cfg.endpoint, cfg.port)
    try:
        display = _replay(events, cfg)
        summary = runner._summary(display.results, cfg, store / "pipeline.log")
        page = runner._write_report(store / "report.html", display, cfg, cache=False,
                                    curl=summary["curl"])
        assert page == str(store / "report.html")
        dom = _chromium(Path(page), store / "profile", "--dump-dom")
        _chromium(Path(page), store / "profile", "--window-size=1200,2400",
                  f"--screenshot={store / 'report.png'}")
        yield {"dom": dom, "run_id": run_id, "evaluation": evaluation,
               "events": events.getvalue(), "shot": store / "report.png", "cfg": cfg}
    finally:
        from informerflow.serving.endpoints import stop_endpoint

        stop_endpoint(cfg.endpoint)


def test_step_graph_shows_every_step_succeeded_with_its_duration(finished):
    dom = finished["dom"]
    assert re.search(r'id="outcome"[^>]*>succeeded<', dom)
    ends = {e["step"]: e["seconds"] for e in map(progress.parse, finished["events"].splitlines())
            if e and e["event"] == "step_end"}
    assert list(ends) == ["preprocess", "train", "evaluate", "register", "deploy"]
    for name, seconds in ends.items():
        item = re.search(rf'<li class="step succeeded" data-step="{name}"[^>]*>(.*?)</li>', dom)
        assert item, name
        assert f'<span class="secs">{seconds:.1f} s</span>' in item.group(1)


def test_metrics_table_holds_the_evaluations_numbers_and_baselines(finished):
    dom, evaluation = finished["dom"], finished["evaluation"]
    rows = dict(re.findall(r'<tr data-model="(\w+)"[^>]*>(.*?)</tr>', dom))
    assert list(rows) == ["informer", "persistence", "seasonal_naive", "window_mean", "linear"]
    expected = {"informer": evaluation["metrics"], **evaluation["baselines"]}
    for model, metrics in expected.items():
        cells = dict(re.findall(r'<td data-metric="(\w+)">([^<]*)</td>', rows[model]))
        assert cells == {k: f"{metrics[k]:.6g}" for k in ("mae", "rmse", "mape", "r2", "mse")}
    assert f"{evaluation['n_windows']} forecast windows" in dom
    best = min(expected, key=lambda m: expected[m]["mae"])
    assert re.search(rf'<tr data-model="{best}" class="best">', dom)


def test_plots_are_embedded_copies_of_the_runs_png_artifacts(finished):
    embedded = re.findall(r'<img [^>]*data-plot="(\w+)" src="data:image/png;base64,([^"]+)"',
                          finished["dom"])
    assert [name for name, _ in embedded] == ["loss_curves", "forecast_vs_actual",
                                              "error_by_horizon"]
    for name, data in embedded:
        logged = mlflow.artifacts.download_artifacts(
            run_id=finished["run_id"], artifact_path=f"plots/{name}.png")
        assert base64.b64decode(data) == Path(logged).read_bytes()
    # Nothing is fetched from anywhere: no http(s) source or stylesheet in the page.
    assert not re.search(r'(src|href)="https?://(?!127\.0\.0\.1)', finished["dom"])


def test_model_version_alias_endpoint_and_provenance(finished):
    dom, cfg = finished["dom"], finished["cfg"]
    assert '<b id="model-version">1</b>' in dom and '<b id="model-alias">champion</b>' in dom
    url = f"http://127.0.0.1:{cfg.port}"
    assert f'<a href="{url}">{url}</a> serving version 1 of report-test' in dom
    assert f"{url}/v2/models/report-test/infer" in dom  # the curl line to try it
    assert f"<code id=\"run-id\">{finished['run_id']}</code>" in dom
    assert "<th>data.rows</th><td>300</td>" in dom


def test_screenshot_shows_a_drawn_page(finished):
    image = Image.open(finished["shot"])
    assert image.size == (1200, 2400)
    # A blank or failed page is one or two colours; text, tables and three plots are many.
    assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 500


def test_failed_run_report_names_the_failed_step(store, tmp_path):
    short = tmp_path / "short.csv"
    pd.DataFrame({"date": pd.date_range("2024-01-01", periods=20, freq="h"),
                  "y": np.arange(20.0)}).to_csv(short, index=False)
    cfg = _config(short)
    events = io.StringIO()
    with contextlib.redirect_stdout(events), pytest.raises(DataError) as failure:
        steps.preprocess(cfg, tmp_path / "ds")
    display = _replay(events, cfg)
    error = runner._step_error(display.error, tmp_path / "pipeline.log")
    page = runner._write_report(tmp_path / "report.html", display, cfg, cache=True,
                                error=str(error))
    dom = _chromium(Path(page), tmp_path / "profile", "--dump-dom")
    assert re.search(r'id="outcome"[^>]*>failed<', dom)
    assert re.search(r'data-step="preprocess" data-state="failed"', dom)
    for later in ("train", "evaluate", "register", "deploy"):
        assert re.search(rf'data-step="{later}" data-state="not run"', dom)
    message = str(failure.value).split("\n")[0]
    assert f"preprocess step: {message}" in dom.replace("&gt;", ">").replace("&lt;", "<")
    assert 'id="metrics"' not in dom and "<img" not in dom

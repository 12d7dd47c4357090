"""The five steps of a run, as plain functions over directories and MLflow ids.

The KFP components in ``pipeline.py`` are thin shells around these, so the same code runs in a
local pipeline, on a cluster, and in tests. Each step reads what the previous one wrote:

    preprocess  file -> dataset dir (series.parquet, run_config.json, ingest_report.json)
    train       dataset dir -> model dir (a saved Forecaster) + an MLflow run with losses
    evaluate    dataset + model dirs -> test metrics, baselines, plots, the pyfunc model
    register    run -> a registered version with an alias
    deploy      registered model -> a local endpoint answering forecasts
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import tempfile
import time
import traceback
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities import RunStatus

from informerflow import plots, progress, state, tracking
from informerflow.config import RunConfig
from informerflow.data.ingest import LoadedSeries, load_series
from informerflow.data.prepare import PreparedData, prepare
from informerflow.errors import DataError, InformerflowError, TrainingError
from informerflow.evaluate import assess
from informerflow.forecaster import Forecaster, ForecastSpec
from informerflow.monitoring.drift import build_profile
from informerflow.pyfunc import input_example, log_forecaster
from informerflow.train import (
    Callbacks,
    EpochResult,
    TrainResult,
    retryable_failure,
    safer_config,
    train,
)

log = logging.getLogger(__name__)

SERIES_FILE, CONFIG_FILE, REPORT_FILE = "series.parquet", "run_config.json", "ingest_report.json"


def step(name: str):
    """Announce a step's start and end as progress events, and its typed failure.

    A step may run in a KFP subprocess whose exception the parent only sees as "task failed";
    the error event carries the exception's type and message across so the CLI can show it.
    """

    def wrap(func):
        @functools.wraps(func)
        def run(*args, **kwargs):
            started = time.monotonic()
            progress.emit("step_start", step=name)
            try:
                result = func(*args, **kwargs)
            except InformerflowError as exc:
                progress.emit("error", step=name, type=type(exc).__name__, message=str(exc))
                raise
            progress.emit("step_end", step=name, seconds=round(time.monotonic() - started, 2))
            return result

        return run

    return wrap


def experiment_name(cfg: RunConfig, source: str) -> str:
    if cfg.experiment:
        return cfg.experiment
    stem = Path(source.split(":", 1)[-1]).name
    for suffix in (".gz", ".csv", ".parquet", ".tsv"):
        stem = stem.removesuffix(suffix)
    return f"informerflow-{stem}"


def check(cfg: RunConfig) -> LoadedSeries:
    """Everything preprocess would refuse, without writing anything (the CLI runs it first)."""
    cfg.validate()
    series = load_series(cfg.data)
    prepare(series, dataclasses.replace(cfg, model=dataclasses.replace(cfg.model)))
    return series


# -- preprocess --------------------------------------------------------------------------------


@step("preprocess")
def preprocess(cfg: RunConfig, out_dir: str | Path, expected_sha256: str = "") -> dict:
    """Validate the config and the file, and write the clean series with the resolved config.

    ``expected_sha256`` is the fingerprint of the file the caller checked: it makes the data's
    content (not just its path) one of the step's inputs, which is what a step cache keys on,
    and a file changed since then is refused rather than silently trained on.
    """
    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    series = load_series(cfg.data)
    if expected_sha256 and series.sha256 != expected_sha256:
        raise DataError(
            f"{series.source} changed after it was checked: expected sha256 "
            f"{expected_sha256[:12]}..., found {series.sha256[:12]}...; run again"
        )
    prepare(series, cfg)  # fails early on too few rows and fixes channel counts in cfg
    cfg.validate()
    series.frame.to_parquet(out / SERIES_FILE, index=False)
    report = {
        "source": series.source, "sha256": series.sha256, "rows": len(series.frame),
        "freq": series.freq, "target": series.target, "value_cols": series.value_cols,
        "id_col": series.id_col, "time_col": series.time_col, "tz": series.tz,
        "series": len(series.frame[series.id_col].unique()) if series.id_col else 1,
        "start": str(series.frame["date"].min()), "end": str(series.frame["date"].max()),
        "repairs": series.repairs, "warnings": series.warnings,
        # When this dataset was made: a run that reuses a cached dataset logs the same stamp.
        "preprocessed_at": datetime.now(UTC).isoformat(timespec="microseconds"),
    }
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2))
    (out / CONFIG_FILE).write_text(cfg.to_json())
    for line in series.warnings + series.repairs:
        log.warning("%s", line)
    progress.emit("preprocessed", **{k: report[k] for k in ("rows", "freq", "repairs")})
    return report


def load_dataset(dataset_dir: str | Path) -> tuple[LoadedSeries, RunConfig, dict]:
    d = Path(dataset_dir)
    cfg = RunConfig.from_dict(json.loads((d / CONFIG_FILE).read_text()))
    report = json.loads((d / REPORT_FILE).read_text())
    series = LoadedSeries(
        frame=pd.read_parquet(d / SERIES_FILE), source=report["source"], sha256=report["sha256"],
        time_col=report["time_col"], target=report["target"], value_cols=report["value_cols"],
        id_col=report["id_col"], freq=report["freq"], tz=report["tz"],
        repairs=report["repairs"], warnings=report["warnings"],
    )
    return series, cfg, report


# -- train -------------------------------------------------------------------------------------


@step("train")
def train_step(dataset_dir: str | Path, model_dir: str | Path) -> str:
    """Train, save the best Forecaster to ``model_dir``, and return the MLflow run id.

    A failed attempt ends its run FAILED with an ``error`` tag and a traceback artifact. With
    ``train.retry_on_failure`` a diverged or out-of-memory attempt is retried once in a nested
    run with a smaller batch and learning rate; the returned id is then the retry's.
    """
    series, cfg, report = load_dataset(dataset_dir)
    tracking.configure()
    experiment_id = tracking.ensure_experiment(experiment_name(cfg, series.source))
    with mlflow.start_run(experiment_id=experiment_id, log_system_metrics=True) as run:
        try:
            result, data = _attempt(cfg, series, report, Path(dataset_dir))
            run_id, retry = run.info.run_id, {}
        except Exception as exc:
            _record_failure(exc)
            kind = retryable_failure(exc)
            if not (cfg.train.retry_on_failure and kind):
                raise  # MLflow marks the run FAILED on the way out
            cfg, result, data, run_id, retry = _retry(cfg, kind, series, report,
                                                      Path(dataset_dir), run.info.run_id)
            # The first attempt did fail; only its nested retry produced the model.
            mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
    spec = ForecastSpec(cfg, data.input_cols, data.output_cols, series.target, series.freq,
                        series.tz, series.id_col)
    reference = build_profile(data.train_values(), data.input_cols)
    Forecaster(result.model, spec, data.scaler, reference).save(model_dir)
    progress.emit("trained", run_id=run_id, best_epoch=result.best_epoch + 1,
                  best_val_loss=result.best_val_loss, **retry)
    return run_id


def _attempt(cfg: RunConfig, series: LoadedSeries, report: dict,
             dataset_dir: Path) -> tuple[TrainResult, PreparedData]:
    """One training attempt inside the active run: inputs, the loop, the final records."""
    data = prepare(series, cfg)
    _log_inputs(cfg, series, report, dataset_dir)
    result = train(data, _tracking_callbacks(cfg.train.autolog))
    mlflow.log_metrics({"best_epoch": result.best_epoch + 1,
                        "best_val_loss": result.best_val_loss})
    mlflow.set_tag("stopped_early", str(result.stopped_early).lower())
    with tempfile.TemporaryDirectory() as tmp:
        curve = plots.loss_curves([h.train_loss for h in result.history],
                                  [h.val_loss for h in result.history],
                                  Path(tmp) / "loss_curves.png", loss=cfg.train.loss)
        mlflow.log_artifact(str(curve), "plots")
    return result, data


def _record_failure(exc: BaseException) -> None:
    """Say on the active run why it failed: an ``error`` tag and a short traceback."""
    mlflow.set_tag("error", f"{type(exc).__name__}: {exc}"[:5000])
    mlflow.log_text(traceback.format_exc(limit=20), "error/traceback.txt")


def _retry(cfg: RunConfig, kind: str, series: LoadedSeries, report: dict, dataset_dir: Path,
           parent_id: str) -> tuple[RunConfig, TrainResult, PreparedData, str, dict]:
    """Train once more in a run nested under the failed one, with a safer configuration."""
    safer = dataclasses.replace(cfg, train=safer_config(cfg.train))
    reason = (f"{kind} in run {parent_id}; retrying once with batch_size "
              f"{cfg.train.batch_size} -> {safer.train.batch_size} and learning_rate "
              f"{cfg.train.learning_rate:g} -> {safer.train.learning_rate:g}")
    log.warning("training failed (%s)", reason)
    progress.emit("retry", step="train", reason=reason)
    # A nested run lands in the active *experiment*, not the parent's, unless told.
    experiment_id = mlflow.active_run().info.experiment_id
    with mlflow.start_run(experiment_id=experiment_id, nested=True, run_name="retry",
                          log_system_metrics=True,
                          tags={"retry_reason": reason, "retry_of": parent_id}) as child:
        mlflow.MlflowClient().set_tag(parent_id, "retried_as", child.info.run_id)
        try:
            result, data = _attempt(safer, series, report, dataset_dir)
        except Exception as exc:
            _record_failure(exc)
            raise TrainingError(
                f"training failed twice: first with {kind}, then in the retry "
                f"(run {child.info.run_id}) with {type(exc).__name__}: {exc}"
            ) from exc
    return safer, result, data, child.info.run_id, {"retry_of": parent_id, "retry_reason": reason}


def _log_inputs(cfg: RunConfig, series: LoadedSeries, report: dict, dataset_dir: Path) -> None:
    mlflow.log_params(cfg.flat())
    split = f"{cfg.data.train_frac}/{cfg.data.val_frac}/pred{cfg.model.pred_len}"
    mlflow.set_tags({
        tracking.DATA_SHA_TAG: series.sha256, tracking.SPLIT_TAG: split,
        "data.source": series.source, "data.rows": str(report["rows"]),
        "data.freq": series.freq, **tracking.code_version(),
    })
    dataset = mlflow.data.from_pandas(
        series.frame, source=series.source.split(":", 1)[-1], name=Path(series.source).name,
        targets=series.target, digest=series.sha256[:36],
    )
    mlflow.log_input(dataset, context="training")
    # The config this attempt trained with (a retry's differs from the dataset's copy).
    mlflow.log_text(cfg.to_json(), CONFIG_FILE)
    mlflow.log_artifact(str(dataset_dir / REPORT_FILE))


def _tracking_callbacks(autolog: bool = True) -> Callbacks:
    """Progress events for the CLI, plus (with ``autolog``) per-epoch MLflow step metrics.

    MLflow's PyTorch autolog only hooks Lightning's trainer; this is the same record for our loop.
    """

    def epoch_start(epoch: int, n_batches: int) -> None:
        progress.emit("epoch_start", epoch=epoch, batches=n_batches)

    def batch_end(batch: int, loss: float) -> None:
        progress.emit("batch", batch=batch, loss=loss)

    def epoch_end(r: EpochResult) -> None:
        if autolog:
            mlflow.log_metrics({"train_loss": r.train_loss, "val_loss": r.val_loss,
                                "learning_rate": r.learning_rate}, step=r.epoch + 1)
        progress.emit("epoch_end", **asdict(r))

    return Callbacks(epoch_start, batch_end, epoch_end)


# -- evaluate ----------------------------------------------------------------------------------


@step("evaluate")
def evaluate_step(dataset_dir: str | Path, model_dir: str | Path, run_id: str) -> dict:
    """Score the model and the baselines on the test split; log them and the pyfunc model."""
    series, cfg, _ = load_dataset(dataset_dir)
    forecaster = Forecaster.load(model_dir)
    data = prepare(series, cfg)
    result = assess(forecaster.model, data)
    tracking.configure()
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"test_{k}": v for k, v in result.metrics.items()})
        mlflow.log_metrics({f"test_scaled_{k}": v for k, v in result.scaled_metrics.items()})
        for name, metrics in result.baselines.items():
            mlflow.log_metrics({f"baseline_{name}_{k}": v for k, v in metrics.items()})
        for sid, metrics in result.per_series.items():
            key = f"series_{tracking.safe_name(sid)}"
            mlflow.log_metrics({f"{key}_{k}": v for k, v in metrics.items()})
        for step, mae in enumerate(result.horizon_mae, start=1):
            mlflow.log_metric("test_mae_by_horizon", mae, step=step)
        mlflow.log_metric("test_windows", result.n_windows)
        mlflow.log_dict(asdict(result), "evaluation.json")
        with tempfile.TemporaryDirectory() as tmp:
            for png in (
                plots.forecast_vs_actual(result.sample_true, result.sample_pred,
                                         Path(tmp) / "forecast_vs_actual.png"),
                plots.horizon_error(result.horizon_mae, Path(tmp) / "error_by_horizon.png"),
            ):
                mlflow.log_artifact(str(png), "plots")
        example = input_example(forecaster, _first_series(series))
        info = log_forecaster(forecaster, example)
        mlflow.set_tag("model_uri", info.model_uri)
    progress.emit("evaluated", metrics=result.metrics, baselines=result.baselines,
                  n_windows=result.n_windows, per_series=result.per_series, run_id=run_id,
                  model_uri=info.model_uri)
    return {"metrics": result.metrics, "baselines": result.baselines,
            "model_uri": info.model_uri, "n_windows": result.n_windows}


def _first_series(series: LoadedSeries) -> pd.DataFrame:
    if not series.id_col:
        return series.frame
    first = series.frame[series.id_col].iloc[0]
    return series.frame[series.frame[series.id_col] == first]


# -- register ----------------------------------------------------------------------------------


@step("register")
def register_step(run_id: str, model_name: str | None = None) -> tracking.Registration:
    tracking.configure()
    run = mlflow.get_run(run_id)
    experiment = mlflow.get_experiment(run.info.experiment_id).name
    name = model_name or experiment
    reg = tracking.register(run_id, run.data.tags["model_uri"], name,
                            run.data.metrics["test_mae"])
    progress.emit("registered", **asdict(reg))
    return reg


# -- deploy ------------------------------------------------------------------------------------


@step("deploy")
def deploy_step(registration: dict, endpoint: str, port: int) -> dict:
    """Serve the model's champion locally, then prove the endpoint answers a real window."""
    from informerflow.serving import client, endpoints

    tracking.configure()
    uri = f"models:/{registration['name']}@{tracking.CHAMPION}"
    ep = endpoints.start_endpoint(endpoint, uri, port=port, tracking_uri=mlflow.get_tracking_uri())
    champion = mlflow.MlflowClient().get_model_version_by_alias(registration["name"],
                                                                 tracking.CHAMPION)
    window = mlflow.artifacts.load_dict(
        f"runs:/{champion.run_id}/model/input_example.json")
    frame = pd.DataFrame(window["data"], columns=window["columns"])
    answer = client.forecast(ep.url, ep.model_name, frame)
    # Kept apart from the endpoint records, which the endpoints module owns.
    request_file = state.state_dir() / "requests" / f"{endpoint}.json"
    request_file.parent.mkdir(parents=True, exist_ok=True)
    request_file.write_text(json.dumps(client.v2_body(frame)))
    result = {"name": endpoint, "url": ep.url, "model_name": ep.model_name,
              "model_uri": uri, "model_version": champion.version, "pid": ep.pid,
              "smoke_forecast_rows": len(answer), "request_file": str(request_file)}
    progress.emit("deployed", **result)
    return result

"""The ``informerflow`` command line: the only layer that talks to a person.

Commands stay thin: they build a RunConfig from flags, call the library, and render results.
Every InformerflowError becomes one readable message block and an exit code from
``errors.exit_code``; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from informerflow import errors, state
from informerflow.config import DataConfig, ModelConfig, RunConfig, TrainConfig

log = logging.getLogger(__name__)
console = Console(file=sys.__stdout__, highlight=False)
err_console = Console(file=sys.__stderr__, highlight=False)

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Informer forecasting: ingest, train, track, register, serve.")
endpoints_app = typer.Typer(help="Local endpoints started by runs or `informerflow serve`.",
                            invoke_without_command=True)
pipeline_app = typer.Typer(help="The Kubeflow pipeline: compile it for a cluster.")
app.add_typer(endpoints_app, name="endpoints")
app.add_typer(pipeline_app, name="pipeline")

_D, _M, _T = DataConfig(), ModelConfig(), TrainConfig()


@app.callback()
def _global(
    state_dir: Path = typer.Option(None, envvar="INFORMERFLOW_HOME",
                                   help="Where runs, models and endpoints are kept "
                                        "(default: ./.informerflow)."),
    tracking_uri: str = typer.Option(None, envvar="MLFLOW_TRACKING_URI",
                                     help="MLflow tracking server (default: SQLite in state dir)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log details to stderr."),
) -> None:
    if state_dir:
        os.environ[state.ENV_HOME] = str(state_dir.resolve())
    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@app.command()
def run(
    data: str = typer.Option(None, "--data", "-d",
                             help="CSV or Parquet file (default: the bundled Alibaba pod CPU "
                                  "series)."),
    target: str = typer.Option(_D.target, help="Column to forecast."),
    features: str = typer.Option(_D.features, help="S univariate, M all->all, MS all->target."),
    time_col: str = typer.Option(None, help="Time column (default: found by name)."),
    id_col: str = typer.Option(None, help="Series id column of a long-format file."),
    freq: str = typer.Option(None, help="Force the frequency (pandas alias, e.g. 15min, B)."),
    missing: str = typer.Option(_D.missing, help="NaN cells: error, interpolate or ffill."),
    duplicates: str = typer.Option(_D.duplicates, help="Repeated stamps: error, last or mean."),
    gaps: str = typer.Option(_D.gaps,
                             help="Short gaps (<= --max-gap-steps): interpolate, ffill, error."),
    max_gap_steps: int = typer.Option(_D.max_gap_steps, help="Longest gap that may be filled."),
    seq_len: int = typer.Option(_M.seq_len, help="Encoder input length."),
    label_len: int = typer.Option(_M.label_len, help="Known steps fed to the decoder."),
    pred_len: int = typer.Option(_M.pred_len, help="Forecast horizon."),
    d_model: int = typer.Option(_M.d_model), n_heads: int = typer.Option(_M.n_heads),
    e_layers: int = typer.Option(_M.e_layers), d_layers: int = typer.Option(_M.d_layers),
    d_ff: int = typer.Option(_M.d_ff), factor: int = typer.Option(_M.factor),
    dropout: float = typer.Option(_M.dropout),
    attn: str = typer.Option(_M.attn, help="prob (ProbSparse) or full."),
    revin: bool = typer.Option(_M.revin, help="Reversible instance normalisation of inputs."),
    epochs: int = typer.Option(_T.epochs), batch_size: int = typer.Option(_T.batch_size),
    learning_rate: float = typer.Option(_T.learning_rate, "--lr"),
    loss: str = typer.Option(_T.loss, help="Training loss: mse (the paper) or mae."),
    patience: int = typer.Option(_T.patience), seed: int = typer.Option(_T.seed),
    max_train_windows: int = typer.Option(
        _T.max_train_windows, help="Sample at most this many training windows per epoch."),
    experiment: str = typer.Option(None, help="MLflow experiment (default: from the file name)."),
    model_name: str = typer.Option(None, help="Registered model (default: the experiment name)."),
    endpoint: str = typer.Option("informer", help="Name of the local endpoint."),
    port: int = typer.Option(8080, help="Port of the local endpoint (on 127.0.0.1)."),
    deploy: bool = typer.Option(True, help="Start a local endpoint for the champion."),
    cache: bool = typer.Option(False, help="Skip preprocessing when an earlier run had the same "
                                           "config and data (KFP's local step cache)."),
    autolog: bool = typer.Option(_T.autolog, help="Log per-epoch losses and learning rate to "
                                                  "MLflow as step metrics."),
    retry_on_failure: bool = typer.Option(
        _T.retry_on_failure, "--retry-on-failure",
        help="Retry a diverged or out-of-memory training once, in a nested run, with half the "
             "batch size and learning rate."),
) -> None:
    """Run the whole pipeline: preprocess, train, evaluate, register, deploy."""
    cfg = RunConfig(
        data=DataConfig(path=data, time_col=time_col, target=target, features=features,
                        id_col=id_col, freq=freq, missing=missing, duplicates=duplicates,
                        gaps=gaps, max_gap_steps=max_gap_steps),
        model=ModelConfig(seq_len=seq_len, label_len=label_len, pred_len=pred_len,
                          d_model=d_model, n_heads=n_heads, e_layers=e_layers,
                          d_layers=d_layers, d_ff=d_ff, factor=factor, dropout=dropout,
                          attn=attn, revin=revin),
        train=TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                          loss=loss, patience=patience, seed=seed,
                          max_train_windows=max_train_windows, autolog=autolog,
                          retry_on_failure=retry_on_failure),
        experiment=experiment, model_name=model_name, endpoint=endpoint, port=port,
        deploy=deploy,
    )
    cfg.validate()  # before the heavy imports below: a bad option is refused at once
    from informerflow.runner import run_pipeline

    summary = run_pipeline(cfg, console=console, cache=cache)
    _print_summary(summary)


@app.command()
def validate(
    path: str = typer.Argument(..., help="CSV or Parquet file."),
    target: str = typer.Option(_D.target), time_col: str = typer.Option(None),
    id_col: str = typer.Option(None), freq: str = typer.Option(None),
    missing: str = typer.Option(_D.missing), duplicates: str = typer.Option(_D.duplicates),
    gaps: str = typer.Option(_D.gaps),
) -> None:
    """Check a file as a run would, and report what was found; trains nothing."""
    from informerflow.data.ingest import load_series

    cfg = RunConfig(data=DataConfig(path=path, target=target, time_col=time_col, id_col=id_col,
                                    freq=freq, missing=missing, duplicates=duplicates, gaps=gaps))
    series = load_series(cfg.validate().data)
    frame = series.frame
    n_series = frame[series.id_col].nunique() if series.id_col else 1
    console.print(f"[green]OK[/] {series.source}: {len(frame)} rows, {n_series} series, "
                  f"frequency {series.freq}, {frame['date'].min()} .. {frame['date'].max()}")
    console.print(f"target {series.target!r}; value columns: {', '.join(series.value_cols)}")
    for line in series.warnings:
        console.print(f"[yellow]warning[/] {line}")
    for line in series.repairs:
        console.print(f"[cyan]repaired[/] {line}")


@app.command()
def ui(port: int = typer.Option(5000), host: str = typer.Option("127.0.0.1")) -> None:
    """Open the MLflow UI on this machine's store (bound to 127.0.0.1 by default)."""
    import subprocess

    from informerflow import tracking

    uri = tracking.configure()
    console.print(f"MLflow UI on http://{host}:{port} (store {uri}); Ctrl+C stops it")
    subprocess.run([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                    "--host", host, "--port", str(port)], check=False)


@app.command("tracking-server")
def tracking_server(
    host: str = typer.Option("127.0.0.1", help="Interface to bind; 0.0.0.0 opens it to a team."),
    port: int = typer.Option(5000),
    backend_store_uri: str = typer.Option(
        None, help="e.g. postgresql://user:pass@db/mlflow (default: SQLite in the state dir)."),
    artifacts_destination: str = typer.Option(
        None, help="Where the server stores artifacts (s3://..., a path) (default: state dir)."),
) -> None:
    """Start an MLflow tracking server; point runs at it with --tracking-uri."""
    import subprocess

    from informerflow import tracking

    backend = backend_store_uri or state.tracking_uri()
    artifacts = artifacts_destination or state.artifact_root()
    console.print(f"MLflow tracking server on http://{host}:{port} "
                  f"(store {tracking.redact(backend)}); Ctrl+C stops it")
    subprocess.run([sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port),
                    "--backend-store-uri", backend, "--artifacts-destination", artifacts],
                   check=False)


@app.command()
def serve(
    model_uri: str = typer.Argument(..., help="models:/NAME@champion, models:/NAME/3 or a dir."),
    name: str = typer.Option(None, help="Model name in the routes (default: from the URI)."),
    host: str = typer.Option("127.0.0.1"), port: int = typer.Option(8080),
    prediction_log: str = typer.Option(
        None, help="SQLite file every answered forecast is appended to (default: "
                   "predictions.db in the state dir; 'off' disables it)."),
) -> None:
    """Serve a model in the foreground (V2, V1, /invocations, /metrics, /dashboard)."""
    from informerflow import tracking
    from informerflow.serving.server import serve as serve_model

    tracking.configure()
    serve_model(model_uri, name=name, host=host, port=port, prediction_log=prediction_log)


@app.command()
def monitor(
    actuals: Path = typer.Option(..., "--actuals", "-a",
                                 help="CSV or Parquet of actual values (time column plus the "
                                      "model's columns, and its id column if it has one)."),
    model: str = typer.Option(None, help="Registered model to monitor (default: every model "
                                         "in the prediction log)."),
    prediction_log: Path = typer.Option(None, help="Default: predictions.db in the state dir."),
    since: str = typer.Option(None, help="Only forecasts served at or after this UTC time "
                                         "(ISO 8601)."),
    window: int = typer.Option(60, help="Steps of the model's frequency per window of the "
                                        "figures over time."),
    time_col: str = typer.Option(None, help="Time column of the actuals (default: by name)."),
    max_mae_ratio: float = typer.Option(1.5, help="Alert when MAE exceeds this many times the "
                                                  "model's test MAE."),
    max_psi: float = typer.Option(1.5, help="Alert above this population stability index."),
    max_ks: float = typer.Option(0.4, help="Alert above this Kolmogorov-Smirnov statistic."),
    max_mean_shift: float = typer.Option(1.0, help="Alert when the mean moves by more "
                                                   "training standard deviations than this."),
    max_std_ratio: float = typer.Option(2.0, help="Alert when the spread changes by more than "
                                                  "this factor, up or down."),
    retrain_on_alert: bool = typer.Option(
        False, "--retrain-on-alert",
        help="On an alert, run the pipeline on the actuals file; the new model becomes champion "
             "only if it beats the current one on the file's last 20%."),
    fail_on_alert: bool = typer.Option(False, "--fail-on-alert",
                                       help="Exit with status 1 when any alert is raised."),
) -> None:
    """Compare logged forecasts with actuals: accuracy, coverage, drift, alerts."""
    from informerflow.monitoring.monitor import Thresholds, run_monitor

    thresholds = Thresholds(max_mae_ratio, max_psi, max_ks, max_mean_shift, max_std_ratio)
    with console.status("monitoring ..."):
        report = run_monitor(str(actuals), model_name=model, log_path=prediction_log,
                             since=since, thresholds=thresholds, window=window,
                             time_col=time_col)
    _print_monitor(report)
    if retrain_on_alert and report.alert:
        from informerflow.monitoring.retrain import retrain

        for version in report.versions:
            if version.alert:
                result = retrain(version.model_name, str(actuals), console=console)
                console.print(f"[bold]retrain[/] {result.summary}")
    if fail_on_alert and report.alert:
        raise typer.Exit(1)


@app.command()
def deploy(
    model_uri: str = typer.Argument(
        ..., help="models:/NAME@champion, models:/NAME/3 or a model dir; for kserve also "
                  "s3://, gs:// or pvc:// (then --storage-uri defaults to it)."),
    target: str = typer.Option("local", help="local: a detached server on this machine; "
                                             "kserve: an InferenceService on the kube context."),
    name: str = typer.Option("informer", help="Endpoint or InferenceService name."),
    port: int = typer.Option(8080, help="local: port on 127.0.0.1."),
    storage_uri: str = typer.Option(None, help="kserve: the MLflow model directory in s3://, "
                                               "gs:// or pvc://CLAIM/PATH."),
    image: str = typer.Option(None, help="kserve: server image (default: informerflow:VERSION)."),
    namespace: str = typer.Option(None, help="kserve: (default: the context's namespace)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="kserve: print the YAML, apply nothing."),
    timeout: float = typer.Option(300.0, help="Seconds to wait until the endpoint is ready."),
) -> None:
    """Serve a model as a local endpoint or as a KServe InferenceService on a cluster."""
    if target == "local":
        cluster_only = {"--storage-uri": storage_uri, "--image": image,
                        "--namespace": namespace, "--dry-run": dry_run or None}
        given = [flag for flag, value in cluster_only.items() if value is not None]
        if given:
            raise errors.ConfigError(f"{', '.join(given)} only apply to --target kserve")
        from informerflow import tracking
        from informerflow.serving.endpoints import start_endpoint

        ep = start_endpoint(name, model_uri, port, tracking_uri=tracking.configure(),
                            timeout=timeout)
        version = f"version {ep.model_version}" if ep.model_version else "(unregistered)"
        console.print(f"endpoint [bold]{ep.name}[/] at {ep.url} (pid {ep.pid}) serving "
                      f"{ep.model_name} {version}")
        console.print(f"Stop it: informerflow endpoints stop {ep.name}")
        return
    if target != "kserve":
        raise errors.ConfigError(f"--target must be local or kserve, got {target!r}")
    from informerflow.serving.kube import deploy_kserve

    result = deploy_kserve(model_uri, name=name, storage_uri=storage_uri, image=image,
                           namespace=namespace, dry_run=dry_run, timeout=timeout)
    if dry_run:
        sys.stdout.write(result.yaml)  # plain, unwrapped: meant for `kubectl apply -f -`
        return
    console.print(f"InferenceService [bold]{result.namespace}/{result.name}[/] is Ready at "
                  f"{result.url or '(no URL reported)'}, serving {result.storage_uri}")


@app.command()
def models(name: str = typer.Argument(None, help="One registered model (default: all).")) -> None:
    """List registered models with their versions, aliases and test MAE."""
    from informerflow import tracking

    tracking.configure()
    table = Table("model", "version", "aliases", "test MAE", "data sha256", "run")
    for row in tracking.list_versions(name):
        mae = "" if row.test_mae is None else f"{row.test_mae:.6f}"
        table.add_row(row.name, row.version, ", ".join(row.aliases), mae,
                      (row.data_sha256 or "")[:12], row.run_id)
    console.print(table)


@app.command()
def promote(name: str, version: str,
            alias: str = typer.Option("champion", help="Alias to move.")) -> None:
    """Move an alias (champion by default) to a version explicitly."""
    from informerflow import tracking

    tracking.configure()
    previous = tracking.promote(name, version, alias)
    was = f" (was version {previous})" if previous else ""
    console.print(f"{name} version {version} is now {alias}{was}")


@app.command()
def compare(run_ids: list[str] = typer.Argument(..., help="MLflow run ids.")) -> None:
    """Print runs' params and metrics side by side (differing params first)."""
    from informerflow import tracking

    tracking.configure()
    table_data = tracking.compare_runs(run_ids)
    for section in ("params", "metrics"):
        table = Table(section, *[r[:8] for r in run_ids], title=section)
        rows = sorted(table_data[section].items(),
                      key=lambda kv: (len(set(kv[1].values())) == 1, kv[0]))
        for key, values in rows:
            table.add_row(key, *[values.get(r, "") for r in run_ids])
        console.print(table)


@endpoints_app.callback()
def endpoints_list(ctx: typer.Context) -> None:
    """List local endpoints (stop one with `informerflow endpoints stop NAME`)."""
    if ctx.invoked_subcommand:
        return
    from informerflow.serving.endpoints import list_endpoints

    table = Table("name", "url", "model", "pid", "state")
    for ep in list_endpoints():
        table.add_row(ep.name, ep.url, f"{ep.model_uri} (v{ep.model_version})", str(ep.pid),
                      ep.status if ep.status == "running" else f"[red]{ep.status}[/]")
    console.print(table)


@endpoints_app.command("stop")
def endpoints_stop(name: str) -> None:
    """Stop a local endpoint."""
    from informerflow.serving.endpoints import stop_endpoint

    stop_endpoint(name)
    console.print(f"stopped endpoint {name!r}")


@endpoints_app.command("logs")
def endpoints_logs(name: str, lines: int = typer.Option(50)) -> None:
    """Show the end of an endpoint's log."""
    from informerflow.serving.endpoints import endpoint_logs

    console.print(endpoint_logs(name, lines), markup=False)


@pipeline_app.command("compile")
def pipeline_compile(
    output: Path = typer.Option(Path("pipeline.yaml"), "-o", "--output"),
    image: str = typer.Option("informerflow:0.1.0", help="Image with informerflow installed."),
) -> None:
    """Write the pipeline's KFP v2 YAML for a Kubeflow cluster."""
    from informerflow.pipeline import compile_pipeline

    compile_pipeline(output, image)
    console.print(f"wrote {output}")


@pipeline_app.command("submit")
def pipeline_submit(
    host: str = typer.Option(..., help="KFP API, e.g. http://127.0.0.1:8888 (a port-forward)."),
    config: Path = typer.Option(None, help="RunConfig JSON, e.g. an earlier run's "
                                           "run_config.json (default: the defaults)."),
    data: str = typer.Option(None, help="Data path as the cluster's pods see it (overrides "
                                        "the config's)."),
    image: str = typer.Option("informerflow:0.1.0", help="Image with informerflow installed."),
    experiment: str = typer.Option("informerflow", help="KFP experiment to file the run in."),
    run_name: str = typer.Option(None, help="(default: file name and time)"),
    cache: bool = typer.Option(False, help="Let the cluster reuse preprocess outputs; the data "
                                           "must be readable here, to fingerprint it."),
    tracking_secret: str = typer.Option(
        "informerflow-tracking", help="Kubernetes Secret in the run's namespace holding "
                                      "MLFLOW_TRACKING_URI (and optional credentials)."),
) -> None:
    """Compile the pipeline and start a run of it on a Kubeflow Pipelines API."""
    import json

    from informerflow.pipeline import submit_pipeline

    try:
        cfg = RunConfig.from_dict(json.loads(config.read_text())) if config else RunConfig()
    except (OSError, ValueError, TypeError) as exc:
        raise errors.ConfigError(f"--config {config}: {exc}") from exc
    if data:
        cfg.data.path = data
    cfg.validate()
    sha = ""
    if cache:
        from informerflow.data.ingest import load_series

        try:
            sha = load_series(cfg.data).sha256
        except errors.InformerflowError as exc:
            raise errors.ConfigError(
                f"--cache keys preprocessing on the data's sha256, computed here, but the data "
                f"could not be read on this machine ({exc}); submit without --cache") from exc
    run = submit_pipeline(host, cfg.to_json(), image=image, experiment=experiment,
                          run_name=run_name, data_sha256=sha, cache=cache,
                          model_name=cfg.model_name or "", tracking_secret=tracking_secret)
    console.print(f"submitted run {run.run_id} to experiment {experiment!r}: {run.url}",
                  markup=False, soft_wrap=True)


def _print_monitor(report) -> None:
    table = Table("model", "version", "pairs", "coverage", "MAE", "test MAE", "ratio", "RMSE",
                  "MAPE %", "PSI", "KS", title=f"monitoring against {report.actuals}")
    for v in report.versions:
        o = v.overall
        psi = max((d["psi"] for d in v.drift.values()), default=None)
        ks = max((d["ks"] for d in v.drift.values()), default=None)
        table.add_row(v.model_name, v.version, str(o["n_pairs"]), _fmt(o["coverage"], "{:.1%}"),
                      _fmt(o["mae"]), _fmt(o["test_mae"]), _fmt(o["mae_ratio"], "{:.2f}x"),
                      _fmt(o["rmse"]), _fmt(o["mape"], "{:.2f}"), _fmt(psi, "{:.3f}"),
                      _fmt(ks, "{:.3f}"))
    console.print(table)
    for v in report.versions:
        for line in v.alerts:
            console.print(f"[bold red]ALERT[/] {escape(v.model_name)} v{v.version}: "
                          f"{escape(line)}")
        if not v.alerts:
            console.print(f"[green]ok[/] {escape(v.model_name)} v{v.version}: no alert")
        if v.run_id:
            console.print(f"  monitoring run {v.run_id}; dashboard figures in {v.status_file}")


def _fmt(value: float | None, pattern: str = "{:.6g}") -> str:
    return "-" if value is None else pattern.format(value)


def _print_summary(summary: dict) -> None:
    evaluation, reg, dep = summary["evaluation"], summary["registration"], summary["deployment"]
    table = Table("model", "MAE", "RMSE", "MAPE %", "R2", title="Test split (original units)")
    rows = {"informer": evaluation["metrics"], **evaluation["baselines"]}
    best_base = min(v["mae"] for k, v in evaluation["baselines"].items())
    for name, m in rows.items():
        style = "bold green" if name == "informer" else None
        table.add_row(name, f"{m['mae']:.6f}", f"{m['rmse']:.6f}", f"{m['mape']:.2f}",
                      f"{m['r2']:.4f}", style=style)
    console.print(table)
    per_series = evaluation.get("per_series") or {}
    if per_series:
        by_series = Table("series", "MAE", "RMSE", "MAPE %", title="Informer per series")
        for sid, m in per_series.items():
            by_series.add_row(sid, f"{m['mae']:.6f}", f"{m['rmse']:.6f}", f"{m['mape']:.2f}")
        console.print(by_series)
    gain = 100 * (1 - evaluation["metrics"]["mae"] / best_base)
    console.print(f"Informer MAE vs best baseline: {gain:+.1f}% "
                  f"({'better' if gain > 0 else 'worse'}) over {evaluation['n_windows']} windows")
    console.print(f"Registered [bold]{reg['name']}[/] version {reg['version']} as "
                  f"[bold]{reg['alias']}[/]: {reg['reason']}")
    if dep and not dep.get("skipped"):
        console.print(f"Endpoint [bold]{dep['name']}[/] at {dep['url']} "
                      f"serving v{dep['model_version']}")
        console.print("Try it:\n" + summary["curl"], markup=False, soft_wrap=True)
        console.print(f"Stop it: informerflow endpoints stop {dep['name']}")
    console.print("Experiment UI: informerflow ui  (then open http://127.0.0.1:5000)")
    if summary.get("report"):
        console.print(f"Report: {summary['report']}", markup=False, soft_wrap=True)


def main() -> None:
    try:
        # Without standalone mode click returns a command's `typer.Exit` code instead of exiting.
        code = app(standalone_mode=False)
    except errors.InformerflowError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(errors.exit_code(exc))
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except (typer.Exit, SystemExit) as exc:
        sys.exit(getattr(exc, "exit_code", getattr(exc, "code", 0)))
    except Exception as exc:
        # Usage errors (missing argument, unknown option, bad number) come from the click that
        # typer bundles, not from the click package, so they are recognised by what they offer.
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        raise
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()

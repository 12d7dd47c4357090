"""``informerflow run``: the pipeline executed locally, with progress drawn in the terminal.

The KFP local runner prints each step's output into this process's stdout. We capture it: marked
progress events (see ``progress``) drive the progress bars and collect the steps' results, and
everything else goes to a log file in the run's directory, so the terminal shows only what a
person needs and the log keeps everything for when something fails.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from informerflow import errors, progress, report, state
from informerflow.config import RunConfig

log = logging.getLogger(__name__)

STEPS = report.STEPS


class _Output(io.TextIOBase):
    """A stdout stand-in that routes marked events to a handler and the rest to a log file."""

    def __init__(self, on_event, logfile):
        self._on_event, self._log, self._buffer = on_event, logfile, ""

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            event = progress.parse(line)
            if event is None:
                self._log.write(line + "\n")
            else:
                self._on_event(event)
        return len(text)

    def flush(self) -> None:
        self._log.flush()


class _Display:
    """Turns progress events into step lines and epoch/batch bars."""

    def __init__(self, console: Console, epochs: int):
        self.console, self.epochs = console, epochs
        self.results: dict[str, Any] = {}
        self.error: dict | None = None
        self.steps = report.StepLog()
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                             console=console, transient=False)
        self.epoch_task = self.batch_task = None

    def __call__(self, event: dict) -> None:
        kind = event.pop("event")
        self.steps.record(kind, event)
        handler = getattr(self, f"_on_{kind}", None)
        if handler:
            handler(**event)
        else:
            self.results[kind] = event

    def _on_step_start(self, step: str) -> None:
        self.console.print(f"[bold]>[/] {step} ...")
        if step == "train":
            self.bars.start()
            self.epoch_task = self.bars.add_task("epochs", total=self.epochs, info="")

    def _on_step_end(self, step: str, seconds: float) -> None:
        if step == "train":
            self.bars.stop()
        self.console.print(f"[green]done[/] {step} ({seconds:.1f} s)")

    def _on_retry(self, step: str, reason: str) -> None:
        self.console.print(f"  [yellow]retry[/] {reason}")
        if self.epoch_task is not None:
            self.bars.reset(self.epoch_task)

    def _on_epoch_start(self, epoch: int, batches: int) -> None:
        if self.batch_task is not None:
            self.bars.remove_task(self.batch_task)
        self.batch_task = self.bars.add_task(f"epoch {epoch + 1} batches", total=batches,
                                             info="")

    def _on_batch(self, batch: int, loss: float) -> None:
        self.bars.update(self.batch_task, completed=batch + 1, info=f"loss {loss:.4f}")

    def _on_epoch_end(self, epoch: int, train_loss: float, val_loss: float, improved: bool,
                      **_: Any) -> None:
        mark = " *" if improved else ""
        self.bars.update(self.epoch_task, completed=epoch + 1,
                         info=f"train {train_loss:.4f} val {val_loss:.4f}{mark}")

    def _on_preprocessed(self, rows: int, freq: str, repairs: list[str]) -> None:
        self.console.print(f"  {rows} rows at frequency {freq}")
        for line in repairs:
            self.console.print(f"  [cyan]repaired[/] {line}", markup=True)
        self.results["preprocessed"] = {"rows": rows, "freq": freq, "repairs": repairs}

    def _on_error(self, **event: Any) -> None:
        self.error = event


def run_pipeline(cfg: RunConfig, console: Console | None = None, cache: bool = False) -> dict:
    """Validate, then run the KFP pipeline locally; returns what each step reported.

    Every run, failed or not, leaves ``report.html`` next to its log.
    """
    from informerflow.pipeline import run_local
    from informerflow.steps import check

    console = console or Console()
    cfg.validate()
    series = check(cfg)  # reads and validates the data here: bad input fails before any subprocess

    home = state.state_dir()
    os.environ[state.ENV_HOME] = str(home)  # the steps' subprocesses must find the same store
    os.environ[progress.ENV_FLAG] = "1"
    run_dir = home / "pipeline_runs" / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    display = _Display(console, cfg.train.epochs)
    # KFP warns that our image name lacks "python"; locally no image is used at all.
    warnings.filterwarnings("ignore", message="You may be attemping to run a task",
                            category=RuntimeWarning)
    log_path = run_dir / "pipeline.log"
    with open(log_path, "w") as logfile, contextlib.redirect_stdout(_Output(display, logfile)):
        try:
            run_local(cfg.to_json(), run_dir / "outputs", model_name=cfg.model_name or "",
                      endpoint=cfg.endpoint, port=cfg.port, deploy=cfg.deploy, cache=cache,
                      data_sha256=series.sha256, cache_root=home / "kfp_cache")
        except Exception as exc:  # KFP reports a failed task as a bare RuntimeError
            display.bars.stop()
            error = _step_error(display.error, log_path)
            _write_report(run_dir / "report.html", display, cfg, cache, error=str(error))
            raise error from exc
        finally:
            os.environ.pop(progress.ENV_FLAG, None)
    for step in display.steps.finish(succeeded=True, skipped=_skipped(cfg), cache=cache):
        if step.state == "cached":
            console.print(f"[blue]cached[/] {step.name} (output of an identical earlier run)")
    summary = _summary(display.results, cfg, log_path)
    summary["report"] = _write_report(run_dir / "report.html", display, cfg, cache,
                                      curl=summary.get("curl"))
    return summary


def _write_report(path: Path, display: _Display, cfg: RunConfig, cache: bool,
                  error: str | None = None, curl: str | None = None) -> str | None:
    """Write the run's HTML report; returns its path, or None when it could not be written.

    A report is a convenience: failing to write one must neither hide the step error being
    raised nor fail a run whose model is already registered and served.
    """
    from informerflow import tracking

    results = display.results
    run_id = (results.get("evaluated") or results.get("trained") or {}).get("run_id")
    page = report.PipelineReport(
        steps=display.steps.finish(succeeded=error is None, skipped=_skipped(cfg), cache=cache),
        evaluation=results.get("evaluated"), registration=results.get("registered"),
        deployment=results.get("deployed", {"skipped": True}) if error is None else None,
        run_id=run_id, error=error, curl=curl,
    )
    try:
        if run_id:
            tracking.configure()
            page.experiment, page.tags, page.plots = report.fetch_run(run_id)
        return str(report.write(page, path))
    except Exception:  # broad on purpose: see the docstring
        log.warning("could not write the run report %s", path, exc_info=True)
        return None


def _skipped(cfg: RunConfig) -> tuple[str, ...]:
    return () if cfg.deploy else ("deploy",)


def _step_error(event: dict | None, log_path: Path) -> errors.InformerflowError:
    if event is None:
        return errors.PipelineError(f"a pipeline step failed; see its output in {log_path}")
    cls = getattr(errors, event["type"], errors.PipelineError)
    return cls(f"{event['step']} step: {event['message']}")


def _summary(results: dict, cfg: RunConfig, log_path: Path) -> dict:
    deployment = results.get("deployed", {"skipped": True})
    summary = {
        "evaluation": results["evaluated"],
        "registration": results["registered"],
        "deployment": deployment,
        "log": str(log_path),
    }
    summary["evaluation"]["n_windows"] = results["evaluated"].get("n_windows", 0)
    if not deployment.get("skipped"):
        summary["curl"] = curl_example(deployment["url"], deployment["model_name"],
                                       deployment["request_file"])
    return summary


def curl_example(url: str, model_name: str, body_file: str) -> str:
    """A command a person can paste: the smoke-test window, sent to the V2 route."""
    return (f"curl -s -H 'Content-Type: application/json' -d @{body_file} "
            f"{url}/v2/models/{model_name}/infer")

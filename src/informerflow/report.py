"""One self-contained HTML page per pipeline run: what ran, how long, how well, where it went.

The page carries everything inline (styles, and the run's plots as base64 PNG data URIs), so it
opens offline, can be attached to a ticket or mailed, and never reaches out to the network.
Its inputs are the steps' progress events (states and durations), the evaluation, registration
and deployment results, and the MLflow run (tags and ``plots/*.png``).
"""

from __future__ import annotations

import base64
import html
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STEPS = ("preprocess", "train", "evaluate", "register", "deploy")
METRICS = ("mae", "rmse", "mape", "r2", "mse")
PLOT_ORDER = ("loss_curves", "forecast_vs_actual", "error_by_horizon")  # others follow, by name
# Tags worth showing a reader; the rest stay one click away in the MLflow UI.
RUN_TAGS = ("data.source", "data.sha256", "data.rows", "data.freq", "data.split",
            "code.version", "code.git_commit", "code.git_dirty", "retry_of", "retry_reason")


@dataclass
class StepRecord:
    """One step's fate in a pipeline run."""

    name: str
    state: str = "not run"  # running, succeeded, failed, cached, skipped or not run
    seconds: float | None = None
    note: str = ""


class StepLog:
    """Steps' states and durations, gathered from the progress events they emit."""

    def __init__(self, names: tuple[str, ...] = STEPS):
        self.steps = {name: StepRecord(name) for name in names}

    def record(self, kind: str, fields: dict[str, Any]) -> None:
        """Take one progress event (``kind`` is its ``event`` field); others are ignored."""
        step = self.steps.get(fields.get("step", ""))
        if step is None:
            return
        if kind == "step_start":
            step.state = "running"
        elif kind == "step_end":
            step.state, step.seconds = "succeeded", fields["seconds"]
        elif kind == "retry":
            step.note = f"retried: {fields['reason']}"
        elif kind == "error":
            step.state, step.note = "failed", f"{fields['type']}: {fields['message']}"

    def finish(self, succeeded: bool, skipped: tuple[str, ...] = (),
               cache: bool = False) -> list[StepRecord]:
        """The final records, with the states no event announces.

        A step still running when the pipeline stopped has crashed. A step that reported
        nothing was ``skipped`` when switched off in a successful run, or, with ``cache`` on,
        served from KFP's cache if the run succeeded or a later step started: every step
        announces its start when it runs, and KFP skips a cache hit without running any of our
        code (it logs it only at INFO level, which the CLI hides). A second call changes nothing.
        """
        steps = list(self.steps.values())
        for i, step in enumerate(steps):
            if step.state == "running":
                step.state = "failed"
            elif step.state != "not run":
                continue
            elif succeeded and step.name in skipped:
                step.state = "skipped"
            elif cache and (succeeded or any(s.state != "not run" for s in steps[i + 1:])):
                step.state, step.note = "cached", "reused the output of an identical run"
        return steps


@dataclass
class PipelineReport:
    """Everything the page shows; each part may be missing when the run stopped early."""

    steps: list[StepRecord]
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    evaluation: dict | None = None  # metrics, baselines, n_windows, per_series
    registration: dict | None = None  # name, version, alias, reason
    deployment: dict | None = None  # url, model_name, model_version; or {"skipped": True}
    run_id: str | None = None
    experiment: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    plots: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG bytes
    error: str | None = None
    curl: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None and all(s.state != "failed" for s in self.steps)


def fetch_run(run_id: str) -> tuple[str, dict[str, str], dict[str, bytes]]:
    """The run's experiment name, the tags worth showing, and its ``plots/*.png`` as bytes.

    MLflow must already point at the run's tracking server (``tracking.configure``).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    experiment = client.get_experiment(run.info.experiment_id).name
    tags = {k: run.data.tags[k] for k in RUN_TAGS if k in run.data.tags}
    plots: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="plots",
                                                        dst_path=tmp)
        except (MlflowException, OSError) as exc:  # a run that failed before plotting has none
            log.info("run %s has no plots: %s", run_id, exc)
        else:
            files = sorted(Path(local).glob("*.png"), key=_plot_rank)
            plots = {p.name: p.read_bytes() for p in files}
    return experiment, tags, plots


def _plot_rank(path: Path) -> tuple[int, str]:
    rank = PLOT_ORDER.index(path.stem) if path.stem in PLOT_ORDER else len(PLOT_ORDER)
    return rank, path.name


def write(report: PipelineReport, path: str | Path) -> Path:
    """Render ``report`` to ``path`` (UTF-8 HTML) and return the path."""
    path = Path(path)
    path.write_text(render(report), encoding="utf-8")
    return path


def render(report: PipelineReport) -> str:
    """The whole page as one HTML string."""
    state = "succeeded" if report.succeeded else "failed"
    total = sum(s.seconds or 0.0 for s in report.steps)
    sections = [
        f'<h1>informerflow pipeline run <span class="badge {state}" id="outcome">{state}'
        f"</span></h1>",
        f'<p class="meta">{_e(report.created)} &middot; {total:.1f} s in steps'
        + (f" &middot; experiment <b>{_e(report.experiment)}</b>" if report.experiment else "")
        + (f" &middot; MLflow run <code id='run-id'>{_e(report.run_id)}</code>"
           if report.run_id else "") + "</p>",
        _steps_section(report.steps),
    ]
    if report.error:
        sections.append(f'<section id="error"><h2>Error</h2><pre>{_e(report.error)}</pre>'
                        "</section>")
    sections += [_metrics_section(report.evaluation), _plots_section(report.plots),
                 _model_section(report), _data_section(report.tags)]
    body = "\n".join(s for s in sections if s)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>informerflow run {_e(report.created)}</title><style>{_CSS}</style>"
            f"</head><body>\n{body}\n</body></html>\n")


def _steps_section(steps: list[StepRecord]) -> str:
    items = []
    for s in steps:
        took = f"{s.seconds:.1f} s" if s.seconds is not None else "&ndash;"
        note = f'<span class="note">{_e(s.note)}</span>' if s.note else ""
        items.append(
            f'<li class="step {s.state}" data-step="{s.name}" data-state="{s.state}">'
            f'<span class="name">{s.name}</span><span class="state">{s.state}</span>'
            f'<span class="secs">{took}</span>{note}</li>'
        )
    return f'<section id="steps"><h2>Steps</h2><ol class="graph">{"".join(items)}</ol></section>'


def _metrics_section(evaluation: dict | None) -> str:
    if not evaluation:
        return ""
    rows = {"informer": evaluation["metrics"], **evaluation.get("baselines", {})}
    best = min(rows, key=lambda name: rows[name]["mae"])
    head = "".join(f"<th>{m.upper() if m != 'mape' else 'MAPE %'}</th>" for m in METRICS)
    body = []
    for name, values in rows.items():
        cls = ' class="best"' if name == best else ""
        cells = "".join(f'<td data-metric="{m}">{_num(values.get(m))}</td>' for m in METRICS)
        body.append(f'<tr data-model="{_e(name)}"{cls}><th>{_e(name)}</th>{cells}</tr>')
    per_series = evaluation.get("per_series") or {}
    series_table = ""
    if per_series:
        series_rows = "".join(
            f"<tr><th>{_e(sid)}</th><td>{_num(m['mae'])}</td><td>{_num(m['rmse'])}</td></tr>"
            for sid, m in per_series.items())
        series_table = ("<h3>Informer per series</h3><table><tr><th>series</th><th>MAE</th>"
                        f"<th>RMSE</th></tr>{series_rows}</table>")
    return (f'<section id="metrics"><h2>Test split (original units)</h2>'
            f'<p>{evaluation.get("n_windows", 0)} forecast windows; the lowest MAE is '
            f"highlighted.</p><table><tr><th>model</th>{head}</tr>{''.join(body)}</table>"
            f"{series_table}</section>")


def _plots_section(plots: dict[str, bytes]) -> str:
    if not plots:
        return ""
    figures = "".join(
        f'<figure><img alt="{_e(name)}" data-plot="{_e(Path(name).stem)}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{_e(Path(name).stem.replace('_', ' '))}</figcaption></figure>"
        for name, png in plots.items())
    return f'<section id="plots"><h2>Plots</h2>{figures}</section>'


def _model_section(report: PipelineReport) -> str:
    parts = []
    reg = report.registration
    if reg:
        parts.append(f'<p id="model">Registered <b>{_e(reg["name"])}</b> version '
                     f'<b id="model-version">{_e(reg["version"])}</b> as '
                     f'<b id="model-alias">{_e(reg["alias"])}</b>: {_e(reg["reason"])}</p>')
    dep = report.deployment
    if dep and not dep.get("skipped"):
        parts.append(f'<p id="endpoint">Endpoint <b>{_e(dep["name"])}</b> at '
                     f'<a href="{_e(dep["url"])}">{_e(dep["url"])}</a> serving version '
                     f'{_e(dep["model_version"])} of {_e(dep["model_name"])}</p>')
        if report.curl:
            parts.append(f"<pre>{_e(report.curl)}</pre>")
    elif dep is not None:
        parts.append('<p id="endpoint">No endpoint: deployment was switched off.</p>')
    if not parts:
        return ""
    return f'<section id="registry"><h2>Model and endpoint</h2>{"".join(parts)}</section>'


def _data_section(tags: dict[str, str]) -> str:
    if not tags:
        return ""
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in tags.items())
    return (f'<section id="provenance"><h2>Data and code</h2><table class="plain">{rows}'
            "</table></section>")


def _num(value: float | None) -> str:
    return "&ndash;" if value is None else f"{value:.6g}"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:64rem;color:#1d232b}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d8dde3}
.meta{color:#56606b}code{font-size:.9em}
.badge{font-size:.8rem;padding:.15rem .5rem;border-radius:.6rem;vertical-align:middle}
.badge.succeeded{background:#d7f2dc;color:#17602a}.badge.failed{background:#f9d9d7;color:#8c1c13}
ol.graph{display:flex;flex-wrap:wrap;gap:1.6rem;list-style:none;padding:0}
.step{position:relative;display:flex;flex-direction:column;min-width:8rem;padding:.5rem .8rem;
border:2px solid #b8c0c9;border-radius:.4rem;background:#f5f7f9}
.step:not(:last-child)::after{content:"\\2192";position:absolute;right:-1.35rem;top:35%;
color:#56606b}
.step .name{font-weight:600}.step .secs,.step .note{color:#56606b;font-size:.85rem}
.step.succeeded{border-color:#3a9b52}.step.cached{border-color:#3a78b5;border-style:dashed}
.step.failed{border-color:#c0392b;background:#fdf0ef}.step.skipped{opacity:.6}
table{border-collapse:collapse;margin:.5rem 0}
th,td{padding:.25rem .7rem;border-bottom:1px solid #e3e7eb;text-align:right}
th:first-child,.plain td{text-align:left}tr.best{background:#eaf6ec;font-weight:600}
figure{display:inline-block;margin:.5rem 1rem .5rem 0}img{max-width:100%;border:1px solid #e3e7eb}
figcaption{color:#56606b;font-size:.85rem}
pre{background:#f5f7f9;padding:.6rem;white-space:pre-wrap;overflow-wrap:anywhere}
"""

"""Informer with the product's defaults against the baselines on the bundled pod CPU series.

Trains exactly what `informerflow run` trains (same ingestion, split, scaler, model and training
defaults), without MLflow or KFP, and scores every test window beside the four baselines.
Overrides show what a default is worth, e.g. ``--set model.revin=false --set train.loss=mse``.

    .venv/bin/python bench/bundled/run.py [--seeds 2021 7 42] [--set section.key=value ...]

Writes results/bundled.json and results/bundled.md (one row per seed plus the mean).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from informerflow.config import RunConfig
from informerflow.data.ingest import load_series
from informerflow.data.prepare import prepare
from informerflow.evaluate import BASELINES, assess
from informerflow.train import train

RESULTS = Path(__file__).resolve().parent / "results"


def _override(cfg: RunConfig, assignment: str) -> None:
    path, raw = assignment.split("=", 1)
    section, key = path.split(".")
    target = getattr(cfg, section)
    if isinstance(getattr(target, key), bool):
        value = raw.lower() in ("1", "true", "yes")
    else:
        try:
            value = json.loads(raw)  # numbers and lists
        except json.JSONDecodeError:
            value = raw  # plain strings such as mae or cosine
    setattr(target, key, value)


def run_seed(seed: int, overrides: list[str]) -> dict:
    cfg = RunConfig()
    for assignment in overrides:
        _override(cfg, assignment)
    cfg.train.seed = seed
    started = time.monotonic()
    data = prepare(load_series(cfg.validate().data), cfg)
    result = train(data)
    scores = assess(result.model, data)
    return {
        "seed": seed, "seconds": round(time.monotonic() - started, 1),
        "epochs_run": len(result.history), "informer_mae": scores.metrics["mae"],
        "informer_rmse": scores.metrics["rmse"], "n_windows": scores.n_windows,
        **{f"{name}_mae": scores.baselines[name]["mae"] for name in BASELINES},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[2021])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = [run_seed(seed, args.overrides) for seed in args.seeds]
    best_base = min(BASELINES, key=lambda b: rows[0][f"{b}_mae"])
    mean_mae = statistics.mean(r["informer_mae"] for r in rows)
    gain = 100 * (1 - mean_mae / rows[0][f"{best_base}_mae"])
    report = {"when": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.processor(),
              "threads": args.threads, "overrides": args.overrides, "rows": rows,
              "best_baseline": best_base, "mean_informer_mae": mean_mae, "gain_pct": gain}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bundled.json").write_text(json.dumps(report, indent=2))
    lines = [
        "# Informer (product defaults) vs baselines, bundled Alibaba pod CPU series", "",
        f"{report['when']}, {args.threads} torch threads, overrides: "
        f"{', '.join(args.overrides) or 'none'}. Test MAE in utilisation units over "
        f"{rows[0]['n_windows']} windows.", "",
        "| seed | epochs | s | informer | " + " | ".join(BASELINES) + " |",
        "|---:|---:|---:|---:|" + "---:|" * len(BASELINES),
    ]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['epochs_run']} | {r['seconds']} | "
                     f"{r['informer_mae']:.6f} | "
                     + " | ".join(f"{r[f'{b}_mae']:.6f}" for b in BASELINES) + " |")
    lines += ["", f"Mean Informer MAE {mean_mae:.6f}: {gain:+.2f}% against the best baseline "
              f"({best_base}, {rows[0][f'{best_base}_mae']:.6f})."]
    (RESULTS / "bundled.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

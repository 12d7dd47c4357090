"""Seconds per training iteration and peak memory of informerflow's Informer on ETTh1.

Each configuration runs in a fresh subprocess, so ``ru_maxrss`` (the process's resident-set
high-water mark) is that configuration's own peak; tracemalloc would miss torch's allocator.

Usage:
    .venv/bin/python bench/train_speed/run.py [--quick]

Writes ``results/{quick,full}-t{threads}.json`` and ``.md`` next to this file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from informerflow.config import ModelConfig
from informerflow.model import build_model
from informerflow.timefeatures import time_features

log = logging.getLogger("bench.train_speed")

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("ETTH1_CSV", "/work/shared/data/ett/ETTh1.csv"))
TRAIN_ROWS = 12 * 30 * 24  # the paper's ETTh1 training split: the first 12 months
BATCH = 32

BASE = ModelConfig(seq_len=96, label_len=48, pred_len=24, enc_in=1, dec_in=1, c_out=1,
                   e_layers=2, d_layers=1, factor=5, dropout=0.05, freq="h", embed="timeF")
CONFIGS = {
    "d512-prob": replace(BASE, d_model=512, n_heads=8, d_ff=2048, attn="prob"),
    "d512-full": replace(BASE, d_model=512, n_heads=8, d_ff=2048, attn="full"),
    "d64-prob": replace(BASE, d_model=64, n_heads=4, d_ff=256, attn="prob"),
    "d64-full": replace(BASE, d_model=64, n_heads=4, d_ff=256, attn="full"),
}
# Quoted for the public Informer2020 code on this machine kind; not measured here.
REFERENCE = {
    "d512": {"s_per_iter": 1.20, "peak_gb": 1.8},
    "d64": {"s_per_iter": 0.06, "peak_gb": None},
}
# (warm-up, timed) iterations per width.
ITERS = {"quick": {"d512": (2, 5), "d64": (3, 20)}, "full": {"d512": (2, 15), "d64": (5, 100)}}


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def load_etth1() -> tuple[np.ndarray, np.ndarray]:
    """OT of the training split, standardised with its own statistics, and its timeF marks."""
    frame = pd.read_csv(DATA, parse_dates=["date"]).iloc[:TRAIN_ROWS]
    ot = frame["OT"].to_numpy(dtype=np.float32)
    values = ((ot - ot.mean()) / ot.std())[:, None]  # (N, 1)
    marks = time_features(pd.DatetimeIndex(frame["date"]), "h", "timeF")  # (N, F)
    return values, marks


def sample_batch(values: np.ndarray, marks: np.ndarray, cfg: ModelConfig,
                 rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """A random batch of windows, laid out as the product's data layer lays them out."""
    span = cfg.seq_len + cfg.pred_len
    starts = rng.integers(0, len(values) - span + 1, size=BATCH)
    rows = starts[:, None] + np.arange(span)  # (B, L + P)
    x, m = torch.from_numpy(values[rows]), torch.from_numpy(marks[rows])
    dec = slice(cfg.seq_len - cfg.label_len, span)
    x_dec = x[:, dec].clone()
    x_dec[:, cfg.label_len:] = 0  # the horizon is unknown to the decoder
    return x[:, :cfg.seq_len], m[:, :cfg.seq_len], x_dec, m[:, dec], x[:, cfg.seq_len:]


def worker(name: str, mode: str, threads: int) -> dict:
    """Train one configuration for a few iterations and return its timings and memory."""
    torch.set_num_threads(threads)
    torch.manual_seed(2021)
    values, marks = load_etth1()
    rng = np.random.default_rng(2021)
    cfg = CONFIGS[name]
    warmup, timed = ITERS[mode][name.split("-")[0]]
    baseline = maxrss_mb()

    model = build_model(cfg).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    times, losses = [], []
    for step in range(warmup + timed):
        x_enc, m_enc, x_dec, m_dec, y = sample_batch(values, marks, cfg, rng)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x_enc, m_enc, x_dec, m_dec), y)
        loss.backward()
        optimizer.step()
        if step >= warmup:
            times.append(time.perf_counter() - start)
            losses.append(loss.item())

    return {
        "config": name, "warmup_iters": warmup, "timed_iters": timed,
        "s_per_iter_median": statistics.median(times), "s_per_iter_mean": statistics.fmean(times),
        "s_per_iter_min": min(times), "peak_rss_mb": maxrss_mb(),
        "baseline_rss_mb": baseline, "peak_over_baseline_mb": maxrss_mb() - baseline,
        "n_params": sum(p.numel() for p in model.parameters()),
        "first_loss": losses[0], "last_loss": losses[-1], "model": asdict(cfg),
    }


def run_all(mode: str, threads: int) -> list[dict]:
    rows = []
    for name in CONFIGS:
        log.info("running %s (%s)", name, mode)
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", name, "--mode", mode,
             "--threads", str(threads)],
            capture_output=True, text=True, timeout=900, check=False,
        )
        if proc.returncode:
            raise RuntimeError(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        log.info("%s: %.3f s/iter, peak %.0f MB", name, rows[-1]["s_per_iter_median"],
                 rows[-1]["peak_rss_mb"])
    return rows


def environment(threads: int) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "torch": torch.__version__,
            "python": platform.python_version(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "torch_threads": threads, "load_average_at_start": os.getloadavg(),
            "batch_size": BATCH, "data": str(DATA)}


def markdown(mode: str, env: dict, rows: list[dict]) -> str:
    lines = [
        f"# Training speed on ETTh1 ({mode} run)",
        "",
        f"{env['date']}, torch {env['torch']}, {env['cpu']} ({env['cpu_count']} cores, "
        f"{env['torch_threads']} torch threads, load average at start "
        f"{env['load_average_at_start'][0]:.1f}). Univariate OT, seq 96 / label 48 / pred 24, "
        f"batch {env['batch_size']}, 2 encoder + 1 decoder layers, Adam.",
        "",
        "Peak RSS is the whole worker process (Python, torch, data, model, optimizer state); "
        "'over baseline' subtracts the peak reached before the model was built.",
        "",
        "| config | params | s/iter (median) | s/iter (min) | peak RSS MB | over baseline MB "
        "| reference s/iter | reference peak |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ref = REFERENCE[row["config"].split("-")[0]] if row["config"].endswith("prob") else {}
        ref_s = f"{ref['s_per_iter']:.2f}" if ref else ""
        ref_mem = f"{ref['peak_gb']} GB" if ref.get("peak_gb") else ""
        lines.append(
            f"| {row['config']} | {row['n_params']:,} | {row['s_per_iter_median']:.3f} | "
            f"{row['s_per_iter_min']:.3f} | {row['peak_rss_mb']:.0f} | "
            f"{row['peak_over_baseline_mb']:.0f} | {ref_s} | {ref_mem} |"
        )
    lines += [
        "",
        "Reference columns: the public Informer2020 implementation (ProbSparse) on this machine "
        "kind, as quoted to us (1.20 s/iter and 1.8 GB at d_model 512, 0.06 s/iter at 64); "
        "they were not measured in this run.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (about 1 minute)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads (default 2; 1 gives steadier numbers on a busy box)")
    parser.add_argument("--worker", choices=sorted(CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="full", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.mode, args.threads)))  # the parent reads it
        return

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    mode = "quick" if args.quick else "full"
    env, rows = environment(args.threads), run_all(mode, args.threads)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    stem = f"{mode}-t{args.threads}"
    (out / f"{stem}.json").write_text(
        json.dumps({"mode": mode, "environment": env, "reference": REFERENCE, "results": rows},
                   indent=2) + "\n"
    )
    (out / f"{stem}.md").write_text(markdown(mode, env, rows))
    log.info("wrote %s.{json,md}", out / stem)


if __name__ == "__main__":
    main()

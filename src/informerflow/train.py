"""The training loop: Adam, a learning-rate schedule, early stopping and the best checkpoint.

Shape legend: B batch, L seq_len, S label_len, P pred_len, C input channels, O output channels.
The loop reports through callbacks rather than printing, so the CLI can draw progress bars and
the tracking layer can log step metrics without this module knowing about either.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from informerflow.config import TrainConfig
from informerflow.data.prepare import PreparedData
from informerflow.errors import ConfigError, TrainingError
from informerflow.model import build_model

log = logging.getLogger(__name__)


LOSSES = {"mse": torch.nn.functional.mse_loss, "mae": torch.nn.functional.l1_loss}


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    val_loss: float
    learning_rate: float
    improved: bool


@dataclass
class TrainResult:
    model: torch.nn.Module
    history: list[EpochResult] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    stopped_early: bool = False


@dataclass
class Callbacks:
    """Hooks the loop calls; each defaults to doing nothing."""

    on_epoch_start: Callable[[int, int], None] = lambda epoch, n_batches: None
    on_batch_end: Callable[[int, float], None] = lambda batch, loss: None
    on_epoch_end: Callable[[EpochResult], None] = lambda result: None


# Phrases torch uses when an allocation fails: CUDA's OutOfMemoryError says "out of memory", the
# CPU allocator "can't allocate memory".
_OOM_PHRASES = ("out of memory", "can't allocate memory")
RETRY_SHRINK = 0.5  # the retry's batch size and learning rate, as a fraction of the failed ones


def retryable_failure(exc: BaseException) -> str | None:
    """What went wrong, when a smaller batch and learning rate may fix it; None otherwise.

    A loss that was never finite is the classic symptom of a too-large step; running out of
    memory scales with the batch. Anything else (bad data, a bug) would fail the same way again.
    """
    if isinstance(exc, TrainingError):
        return "non-finite loss"
    if isinstance(exc, RuntimeError) and any(p in str(exc) for p in _OOM_PHRASES):
        return "out of memory"
    return None


def safer_config(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the batch size and learning rate scaled down by ``RETRY_SHRINK``."""
    return dataclasses.replace(
        cfg, batch_size=max(1, int(cfg.batch_size * RETRY_SHRINK)),
        learning_rate=cfg.learning_rate * RETRY_SHRINK,
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device is {name!r} but no CUDA device is available; use 'cpu'")
    return torch.device(name)


def learning_rate(cfg: TrainConfig, epoch: int) -> float:
    """Rate for 0-based ``epoch``: the paper halves it every epoch; cosine decays toward 0."""
    if cfg.lr_schedule == "halve":
        return cfg.learning_rate * 0.5**epoch
    if cfg.lr_schedule == "cosine":
        # Decays toward 0 over the planned epochs; the last epoch still gets a small rate.
        return cfg.learning_rate * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
    return cfg.learning_rate


def evaluate_loss(model: torch.nn.Module, dataset: Dataset, batch_size: int,
                  device: torch.device, kind: str = "mse") -> float:
    """Mean squared (or absolute) error over every window of ``dataset``, none dropped."""
    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for x_enc, m_enc, x_dec, m_dec, y in DataLoader(dataset, batch_size=batch_size):
            pred = model(x_enc.to(device), m_enc.to(device), x_dec.to(device), m_dec.to(device))
            err = pred - y.to(device)
            total += float(torch.sum(err**2 if kind == "mse" else err.abs()))
            count += y.numel()
    return total / count if count else math.nan


def train(data: PreparedData, callbacks: Callbacks | None = None) -> TrainResult:
    """Train an Informer on ``data`` and return it with the weights of its best epoch."""
    cfg = data.config
    callbacks = callbacks or Callbacks()
    seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    model = build_model(cfg.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.learning_rate)

    train_set, val_set = data.dataset("train"), data.dataset("val")
    generator = torch.Generator().manual_seed(cfg.train.seed)
    n_samples = min(len(train_set), cfg.train.max_train_windows or len(train_set))
    sampler = RandomSampler(train_set, num_samples=n_samples, generator=generator)
    loader = DataLoader(train_set, batch_size=cfg.train.batch_size, sampler=sampler)
    log.info("training on %s: %d windows per epoch, %d validation windows, %d parameters",
             device, n_samples, len(val_set), sum(p.numel() for p in model.parameters()))

    result = TrainResult(model=model)
    best_state = copy.deepcopy(model.state_dict())
    stale = 0
    for epoch in range(cfg.train.epochs):
        lr = learning_rate(cfg.train, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        callbacks.on_epoch_start(epoch, len(loader))
        train_loss = _train_epoch(model, loader, optimizer, LOSSES[cfg.train.loss],
                                  cfg.train.clip_grad, device, callbacks)
        val_loss = evaluate_loss(model, val_set, cfg.train.batch_size, device, cfg.train.loss)
        # NaN compares False with everything, so a NaN loss can never count as an improvement.
        improved = val_loss < result.best_val_loss
        if improved:
            result.best_val_loss, result.best_epoch, stale = val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        epoch_result = EpochResult(epoch, train_loss, val_loss, lr, improved)
        result.history.append(epoch_result)
        callbacks.on_epoch_end(epoch_result)
        log.info("epoch %d: train %.5f, val %.5f, lr %.2e%s", epoch + 1, train_loss, val_loss,
                 lr, " (best)" if improved else "")
        if stale >= cfg.train.patience:
            result.stopped_early = True
            log.info("early stop: no validation improvement for %d epochs", stale)
            break

    if not math.isfinite(result.best_val_loss):
        raise TrainingError(
            f"validation loss was never finite in {len(result.history)} epochs (last: "
            f"{result.history[-1].val_loss if result.history else 'none'}); lower --lr or check "
            "the data for extreme values"
        )
    model.load_state_dict(best_state)
    model.to("cpu").eval()
    return result


def _train_epoch(model, loader, optimizer, loss_fn, clip_grad, device, callbacks) -> float:
    model.train()
    total, batches = 0.0, 0
    for i, (x_enc, m_enc, x_dec, m_dec, y) in enumerate(loader):
        optimizer.zero_grad(set_to_none=True)
        pred = model(x_enc.to(device), m_enc.to(device), x_dec.to(device), m_dec.to(device))
        loss = loss_fn(pred, y.to(device))  # (B, P, O) vs (B, P, O)
        loss.backward()
        if clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        optimizer.step()
        value = loss.item()
        total += value
        batches += 1
        callbacks.on_batch_end(i, value)
    return total / max(batches, 1)

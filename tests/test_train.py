"""The training loop on a tiny Informer and a 400-row sine: checkpoints, stopping, schedules."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import torch

from informerflow.config import TrainConfig
from informerflow.data.prepare import prepare
from informerflow.errors import ConfigError, RequestError, TrainingError
from informerflow.evaluate import assess
from informerflow.forecaster import Forecaster, ForecastSpec
from informerflow.train import (
    Callbacks,
    EpochResult,
    evaluate_loss,
    learning_rate,
    resolve_device,
    train,
)

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def prepared(series, tiny_config: Callable, **train_overrides):
    return prepare(series, tiny_config(train={"max_train_windows": 64} | train_overrides))


def test_training_restores_the_best_checkpoint(sine_series, tiny_config: Callable) -> None:
    data = prepared(sine_series, tiny_config, epochs=3)
    result = train(data)

    assert 1 <= len(result.history) <= 3
    losses = [e.val_loss for e in result.history]
    assert all(math.isfinite(v) for v in losses)
    assert result.best_val_loss == min(losses)
    assert result.history[result.best_epoch].improved
    reloaded = evaluate_loss(result.model, data.dataset("val"), 16, CPU)
    assert reloaded == pytest.approx(result.best_val_loss, abs=1e-6)


def test_best_checkpoint_wins_over_a_worse_last_epoch(make_series, tiny_config: Callable) -> None:
    # Validation rows are pure noise: the better the model fits the training sine, the worse it
    # scores there (measured val losses 1.94, 2.15, 2.47), so the first epoch is the best.
    t = np.arange(400)
    y = 10 + np.sin(2 * np.pi * t / 24)
    y[280:320] = 10 + np.random.default_rng(1).normal(0, 1, 40)
    data = prepared(make_series({"y": y}, target="y"), tiny_config, epochs=3,
                    learning_rate=0.01, lr_schedule="constant", patience=5)
    result = train(data)

    assert [e.improved for e in result.history] == [True, False, False]
    assert result.best_epoch == 0
    assert result.history[-1].val_loss > result.best_val_loss
    reloaded = evaluate_loss(result.model, data.dataset("val"), 16, CPU)
    assert reloaded == pytest.approx(result.best_val_loss, abs=1e-6)


def test_small_validation_split_still_gives_a_finite_loss(sine_series,
                                                          tiny_config: Callable) -> None:
    data = prepared(sine_series, tiny_config, epochs=1, batch_size=64)
    val = data.dataset("val")
    assert len(val) == 37 < 64
    result = train(data)
    assert math.isfinite(result.history[0].val_loss)
    # Every window counts once whatever the batch size: no partial batch is dropped.
    assert evaluate_loss(result.model, val, 64, CPU) == pytest.approx(
        evaluate_loss(result.model, val, 5, CPU), rel=1e-6)


def test_evaluate_loss_is_the_mse_over_every_window(sine_series, tiny_config: Callable) -> None:
    data = prepared(sine_series, tiny_config, epochs=1)
    model = train(data).model
    val = data.dataset("val")
    with torch.inference_mode():
        items = [val[i] for i in range(len(val))]
        errs = [(model(*(t[None] for t in item[:4]))[0] - item[4]) ** 2 for item in items]
    expected = float(torch.stack(errs).mean())
    assert evaluate_loss(model, val, 16, CPU) == pytest.approx(expected, rel=1e-5)


def test_nan_validation_loss_never_counts_as_improvement(make_series,
                                                         tiny_config: Callable) -> None:
    t = np.arange(400)
    y = 10 + np.sin(2 * np.pi * t / 24)
    y[300] = np.nan  # a validation row: every validation window covering it scores NaN
    data = prepared(make_series({"y": y}, target="y"), tiny_config, epochs=5, patience=2)
    seen: list[EpochResult] = []
    callbacks = Callbacks(on_epoch_end=seen.append)
    # Never finite means no usable checkpoint: training stops with a typed error, and the
    # patience counter ran out after 2 epochs because NaN never counted as an improvement.
    with pytest.raises(TrainingError, match="validation loss was never finite in 2 epochs"):
        train(data, callbacks)

    assert [math.isnan(e.val_loss) for e in seen] == [True, True]
    assert not any(e.improved for e in seen)
    assert all(math.isfinite(e.train_loss) for e in seen)


def test_patience_one_stops_after_the_first_epoch_without_improvement(
    sine_series, tiny_config: Callable,
) -> None:
    # A rate of 1e-30 leaves every float32 weight unchanged, so epoch 2 cannot beat epoch 1.
    data = prepared(sine_series, tiny_config, epochs=5, patience=1, learning_rate=1e-30)
    result = train(data)
    assert [e.improved for e in result.history] == [True, False]
    assert result.history[1].val_loss == result.history[0].val_loss
    assert result.stopped_early
    assert result.best_epoch == 0


def test_learning_rate_schedules() -> None:
    halve = TrainConfig(learning_rate=1e-3, lr_schedule="halve", epochs=4)
    assert [learning_rate(halve, e) for e in range(4)] == pytest.approx(
        [1e-3, 5e-4, 2.5e-4, 1.25e-4])
    cosine = TrainConfig(learning_rate=1e-3, lr_schedule="cosine", epochs=4)
    assert [learning_rate(cosine, e) for e in range(4)] == pytest.approx(
        [1e-3, 1e-3 * (1 + math.sqrt(0.5)) / 2, 5e-4, 1e-3 * (1 - math.sqrt(0.5)) / 2])
    constant = TrainConfig(learning_rate=2e-3, lr_schedule="constant", epochs=4)
    assert [learning_rate(constant, e) for e in range(4)] == [2e-3] * 4


def test_history_records_the_scheduled_rate_and_callbacks_fire(sine_series,
                                                               tiny_config: Callable) -> None:
    data = prepared(sine_series, tiny_config, epochs=2, patience=5, max_train_windows=40)
    starts, batches, ends = [], [], []
    callbacks = Callbacks(
        on_epoch_start=lambda epoch, n: starts.append((epoch, n)),
        on_batch_end=lambda i, loss: batches.append(i),
        on_epoch_end=lambda r: ends.append(r.epoch),
    )
    result = train(data, callbacks)
    assert [e.learning_rate for e in result.history] == [1e-3, 5e-4]
    assert starts == [(0, 3), (1, 3)]  # 40 windows in batches of 16: 16, 16, 8
    assert batches == [0, 1, 2, 0, 1, 2]
    assert ends == [0, 1]


def test_pred_len_one_and_label_len_zero_trains_and_forecasts(sine_series,
                                                              tiny_config: Callable) -> None:
    cfg = tiny_config(model={"pred_len": 1, "label_len": 0},
                      train={"epochs": 1, "max_train_windows": 32})
    data = prepare(sine_series, cfg.validate())
    result = train(data)
    assert len(result.history) == 1 and math.isfinite(result.best_val_loss)

    spec = ForecastSpec(cfg, data.input_cols, data.output_cols, target="y", freq="h")
    forecaster = Forecaster(result.model, spec, data.scaler)
    tail = sine_series.frame.tail(16)
    frame = pd.DataFrame({"timestamp": tail["date"].dt.strftime("%Y-%m-%dT%H:%M:%S"),
                          "y": tail["y"]})
    out = forecaster.forecast(frame)
    assert list(out.columns) == ["timestamp", "y"]
    assert len(out) == 1
    assert out["timestamp"].iloc[0] == tail["date"].iloc[-1] + pd.Timedelta(hours=1)
    assert math.isfinite(out["y"].iloc[0])
    assert assess(result.model, data).n_windows == 400 - 304 - 16 - 1 + 1

    # A value a float32 model cannot hold is refused by name, never answered with NaN.
    frame.loc[frame.index[3], "y"] = 1e308
    with pytest.raises(RequestError, match=r"column 'y' at row 3: 1e\+308 is far outside"):
        forecaster.forecast(frame)


def test_seeded_runs_give_identical_losses(sine_series, tiny_config: Callable) -> None:
    data = prepared(sine_series, tiny_config, epochs=2)
    first, second = train(data), train(data)
    assert [(e.train_loss, e.val_loss) for e in first.history] == [
        (e.train_loss, e.val_loss) for e in second.history
    ]
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_device_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="train.device is 'cuda' but no CUDA device is available"):
        resolve_device("cuda")
    assert resolve_device("auto") == CPU

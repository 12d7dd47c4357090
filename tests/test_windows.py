"""Chronological splits, the train-only scaler and the sliding windows, on exact small inputs."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest
import torch

from informerflow.config import DataConfig, ModelConfig, RunConfig
from informerflow.data.windows import Scaler, WindowDataset, split_bounds
from informerflow.errors import DataError

# -- split_bounds -------------------------------------------------------------------------------


def test_split_bounds_cut_100_rows_70_10_20() -> None:
    b = split_bounds(100, 0.7, 0.1, seq_len=12, pred_len=6)
    assert (b.train, b.val, b.test) == ((0, 70), (70, 80), (80, 100))


def test_window_counts_per_split_for_seq_12_pred_6() -> None:
    b = split_bounds(100, 0.7, 0.1, seq_len=12, pred_len=6)
    # Train reads rows 0..69; val and test borrow 12 rows of lookback: 58..79 and 68..99.
    assert [b.window_rows(s) for s in ("train", "val", "test")] == [(0, 70), (58, 80), (68, 100)]
    assert b.n_windows("train") == 70 - 18 + 1
    assert b.n_windows("val") == 5
    assert b.n_windows("test") == 15


def test_every_test_row_is_a_target_of_some_window() -> None:
    b = split_bounds(100, 0.7, 0.1, seq_len=12, pred_len=6)
    lo, hi = b.window_rows("test")
    first_target = lo + 12
    last_target = lo + (b.n_windows("test") - 1) + 12 + 6 - 1
    assert (first_target, last_target) == (80, 99)


def test_too_few_validation_rows_names_the_split_its_rows_and_the_need() -> None:
    # 40 rows: train 0..27, val 28..31 (4 rows), test 32..39 (8 rows).
    with pytest.raises(DataError, match=re.escape(
        "too few rows (40) for the window lengths: the val split has 4 rows but needs at least 6 "
        "(seq_len 12 + pred_len 6, of which 12 are borrowed from the previous split). "
        "Use a longer file, shorter seq_len/pred_len, or other split fractions."
    )):
        split_bounds(40, 0.7, 0.1, seq_len=12, pred_len=6)


def test_every_short_split_is_reported_at_once() -> None:
    with pytest.raises(DataError) as info:
        split_bounds(20, 0.7, 0.1, seq_len=12, pred_len=6)
    message = str(info.value)
    assert "the train split has 14 rows but needs at least 18 (seq_len 12 + pred_len 6);" in message
    assert "the val split has 2 rows but needs at least 6" in message
    assert "the test split has 4 rows but needs at least 6" in message


# -- Scaler -------------------------------------------------------------------------------------


def test_scaler_statistics_equal_numpy_on_what_it_was_fitted_on() -> None:
    values = np.array([[1.0, 10.0], [2.0, 30.0], [6.0, 20.0]])
    scaler = Scaler.fit(values, ["a", "b"])
    np.testing.assert_allclose(scaler.mean, values.mean(axis=0))
    np.testing.assert_allclose(scaler.std, values.std(axis=0))
    np.testing.assert_allclose(scaler.transform(values).mean(axis=0), [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(scaler.inverse(scaler.transform(values)), values)


def test_scaler_in_prepare_is_fitted_on_train_rows_only(make_series: Callable) -> None:
    from informerflow.data.prepare import prepare

    rng = np.random.default_rng(1)
    load = np.concatenate([rng.normal(5, 1, 70), rng.normal(50, 9, 30)])  # shift after train
    temp = rng.normal(0, 2, 100)
    series = make_series({"temp": temp, "load": load}, target="load")
    cfg = RunConfig(data=DataConfig(features="MS", target="load"),
                    model=ModelConfig(seq_len=12, label_len=6, pred_len=6))
    data = prepare(series, cfg)

    train = np.column_stack([temp, load])[:70]
    assert data.scaler.columns == ["temp", "load"]
    np.testing.assert_allclose(data.scaler.mean, train.mean(axis=0))
    np.testing.assert_allclose(data.scaler.std, train.std(axis=0))
    assert data.output_cols == ["load"]
    assert (cfg.model.enc_in, cfg.model.c_out) == (2, 1)


def test_inverse_of_the_target_column_alone_uses_the_target_statistics() -> None:
    # MS case: the model outputs only the target, the last input column.
    scaler = Scaler(["temp", "load"], mean=np.array([0.0, 100.0]), std=np.array([2.0, 10.0]))
    out = scaler.inverse(np.array([[[0.5], [-1.0]]]), ["load"])  # (W, P, O) = (1, 2, 1)
    np.testing.assert_allclose(out, [[[105.0], [90.0]]])


def test_constant_column_keeps_std_one_and_stays_finite() -> None:
    values = np.array([[3.0, 1.0], [3.0, 2.0], [3.0, 3.0]])
    scaler = Scaler.fit(values, ["flat", "ramp"])
    assert scaler.std[0] == 1.0
    scaled = scaler.transform(values)
    np.testing.assert_array_equal(scaled[:, 0], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(scaler.inverse(scaled), values)


def test_scaler_json_round_trip() -> None:
    scaler = Scaler.fit(np.array([[1.0, 4.0], [3.0, 8.0]]), ["a", "b"])
    back = Scaler.from_json(scaler.to_json())
    assert back.columns == ["a", "b"]
    np.testing.assert_array_equal(back.mean, [2.0, 6.0])
    np.testing.assert_array_equal(back.std, [1.0, 2.0])


# -- WindowDataset ------------------------------------------------------------------------------


def ramp_dataset(n: int = 30, channels: int = 3, label_len: int = 4, n_out: int = 2):
    values = np.arange(n * channels, dtype=np.float32).reshape(n, channels)
    marks = np.stack([np.arange(n), -np.arange(n)], axis=1).astype(np.float32)
    return values, marks, WindowDataset(values, marks, seq_len=8, label_len=label_len,
                                        pred_len=3, n_out=n_out)


def test_window_dataset_length_and_item_shapes() -> None:
    _, _, ds = ramp_dataset()
    assert len(ds) == 30 - 8 - 3 + 1
    x_enc, m_enc, x_dec, m_dec, y = ds[0]
    assert x_enc.shape == (8, 3)
    assert m_enc.shape == (8, 2)
    assert x_dec.shape == (4 + 3, 3)
    assert m_dec.shape == (4 + 3, 2)
    assert y.shape == (3, 2)
    assert x_enc.dtype == torch.float32


def test_window_dataset_decoder_input_and_target_values() -> None:
    values, marks, ds = ramp_dataset()
    i = 5
    x_enc, m_enc, x_dec, m_dec, y = ds[i]
    np.testing.assert_array_equal(x_enc.numpy(), values[5:13])
    np.testing.assert_array_equal(m_enc.numpy(), marks[5:13])
    # The decoder starts from the encoder's last label_len steps, then pred_len zeros.
    np.testing.assert_array_equal(x_dec[:4].numpy(), x_enc[-4:].numpy())
    np.testing.assert_array_equal(x_dec[4:].numpy(), np.zeros((3, 3)))
    # Its time features run on into the future, which is known.
    np.testing.assert_array_equal(m_dec.numpy(), marks[9:16])
    # y is the future of the last n_out columns.
    np.testing.assert_array_equal(y.numpy(), values[13:16, 1:])


def test_last_window_ends_at_the_last_row() -> None:
    values, _, ds = ramp_dataset()
    *_, y = ds[len(ds) - 1]
    np.testing.assert_array_equal(y.numpy(), values[-3:, 1:])


def test_label_len_zero_gives_a_decoder_of_zeros_only() -> None:
    _, _, ds = ramp_dataset(label_len=0, n_out=3)
    _, _, x_dec, m_dec, y = ds[0]
    assert x_dec.shape == (3, 3)
    assert m_dec.shape == (3, 2)
    np.testing.assert_array_equal(x_dec.numpy(), np.zeros((3, 3)))
    assert y.shape == (3, 3)


def test_too_short_series_has_no_windows() -> None:
    values = np.zeros((10, 1), dtype=np.float32)
    ds = WindowDataset(values, np.zeros((10, 1)), seq_len=8, label_len=4, pred_len=3, n_out=1)
    assert len(ds) == 0

"""A trained Informer with everything needed to forecast in original units.

The Forecaster is what every consumer of a model shares: the MLflow pyfunc wrapper, the model
server and the evaluation code. It owns the rules of a valid input window (columns, length,
finite values, regular stamps) so that all of them reject bad input with the same message.

Files of a saved Forecaster (a directory)::

    weights.pt    state dict, loaded with ``torch.load(weights_only=True)``
    spec.json     the resolved RunConfig plus column names, frequency and time zone
    scaler.json   the train-split mean and std of every input column
    reference.json  the training split's distribution per input column, for drift monitoring
                  (optional: models saved before it existed load without it)
    hashes.json   sha256 of each file above, checked before anything is loaded
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from informerflow.config import RunConfig
from informerflow.data.windows import Scaler
from informerflow.errors import ModelLoadError, RequestError
from informerflow.model import build_model
from informerflow.monitoring.drift import ColumnProfile, profile_from_json, profile_to_json
from informerflow.timefeatures import time_features

log = logging.getLogger(__name__)

TIME = "timestamp"
WEIGHTS, SPEC, SCALER, HASHES = "weights.pt", "spec.json", "scaler.json", "hashes.json"
REFERENCE = "reference.json"


@dataclass
class ForecastSpec:
    """What a model expects and returns, saved beside its weights."""

    config: RunConfig
    input_cols: list[str]  # channel order of the encoder input; the target is last
    output_cols: list[str]
    target: str
    freq: str
    tz: str | None = None  # zone of the training stamps; forecasts are returned in it
    id_col: str | None = None  # long format: requests may carry several series

    def to_json(self) -> str:
        raw = asdict(self)
        raw["config"] = self.config.to_dict()
        return json.dumps(raw, indent=2)

    @classmethod
    def from_json(cls, text: str) -> ForecastSpec:
        raw = json.loads(text)
        raw["config"] = RunConfig.from_dict(raw["config"])
        return cls(**raw)


class Forecaster:
    """Turns the last ``seq_len`` observed rows into ``pred_len`` forecast rows."""

    def __init__(self, model: torch.nn.Module, spec: ForecastSpec, scaler: Scaler,
                 reference: dict[str, ColumnProfile] | None = None):
        self.model = model.eval()
        self.spec = spec
        self.scaler = scaler
        self.reference = reference
        self.name: str | None = None
        self.version: str | None = None

    @property
    def seq_len(self) -> int:
        return self.spec.config.model.seq_len

    @property
    def label_len(self) -> int:
        return self.spec.config.model.label_len

    @property
    def pred_len(self) -> int:
        return self.spec.config.model.pred_len

    @property
    def freq(self) -> str:
        return self.spec.freq

    @property
    def target(self) -> str:
        return self.spec.target

    @property
    def input_cols(self) -> list[str]:
        return self.spec.input_cols

    @property
    def output_cols(self) -> list[str]:
        return self.spec.output_cols

    # -- persistence ---------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), path / WEIGHTS)
        (path / SPEC).write_text(self.spec.to_json())
        (path / SCALER).write_text(self.scaler.to_json())
        files = [WEIGHTS, SPEC, SCALER]
        if self.reference:
            (path / REFERENCE).write_text(profile_to_json(self.reference))
            files.append(REFERENCE)
        hashes = {name: _sha256(path / name) for name in files}
        (path / HASHES).write_text(json.dumps(hashes, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Forecaster:
        path = Path(path)
        missing = [f for f in (WEIGHTS, SPEC, SCALER) if not (path / f).is_file()]
        if missing:
            raise ModelLoadError(f"{path} is not a saved forecaster: missing {', '.join(missing)}")
        verify_hashes(path)
        spec = ForecastSpec.from_json((path / SPEC).read_text())
        model = build_model(spec.config.model)
        state = torch.load(path / WEIGHTS, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        reference = None
        if (path / REFERENCE).is_file():
            reference = profile_from_json((path / REFERENCE).read_text())
        return cls(model, spec, Scaler.from_json((path / SCALER).read_text()), reference)

    # -- forecasting ---------------------------------------------------------------------------

    def forecast(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Forecast from ``frame`` (column ``timestamp`` plus the input columns).

        With an id column (long-format models) every series in the frame is forecast.

        Raises:
            RequestError: naming the missing column, the row count, or the bad cell.
        """
        id_col = self.spec.id_col
        if id_col and id_col in frame.columns:
            ids, groups = zip(*frame.groupby(id_col, sort=False), strict=True)
            outs = self.forecast_batch([g.drop(columns=[id_col]) for g in groups])
            for sid, out in zip(ids, outs, strict=True):
                out.insert(0, id_col, sid)
            return pd.concat(outs, ignore_index=True)
        return self.forecast_batch([frame])[0]

    def forecast_batch(self, frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
        """Forecast several windows with one model call."""
        prepared = [self._prepare(f) for f in frames]
        x_enc = torch.stack([p[0] for p in prepared])  # (B, L, C)
        m_enc = torch.stack([p[1] for p in prepared])  # (B, L, F)
        x_dec = torch.stack([p[2] for p in prepared])  # (B, S + P, C)
        m_dec = torch.stack([p[3] for p in prepared])  # (B, S + P, F)
        with torch.inference_mode():
            scaled = self.model(x_enc, m_enc, x_dec, m_dec).numpy()  # (B, P, O)
        return [
            self._answer(out, future)
            for out, (*_, future) in zip(scaled, prepared, strict=True)
        ]

    def predict_scaled(self, x_enc, m_enc, x_dec, m_dec) -> torch.Tensor:
        """One model call on already prepared tensors (evaluation uses this)."""
        with torch.inference_mode():
            return self.model(x_enc, m_enc, x_dec, m_dec)

    def _answer(self, scaled: np.ndarray, future: pd.DatetimeIndex) -> pd.DataFrame:
        values = self.scaler.inverse(scaled, self.output_cols)
        stamps = future.tz_localize("UTC").tz_convert(self.spec.tz) if self.spec.tz else future
        out = pd.DataFrame(values, columns=self.output_cols)
        out.insert(0, TIME, stamps)
        return out

    def _prepare(self, frame: pd.DataFrame):
        window, stamps = self._validated_window(frame)
        cfg = self.spec.config.model
        future = pd.date_range(stamps[-1], periods=self.pred_len + 1, freq=self.freq)[1:]
        scaled = torch.as_tensor(self.scaler.transform(window), dtype=torch.float32)  # (L, C)
        if not torch.isfinite(scaled).all():
            row, col = (int(i) for i in torch.nonzero(~torch.isfinite(scaled))[0])
            raise RequestError(
                f"column {self.input_cols[col]!r} at row {row}: {float(window[row, col])!r} is far "
                "outside the training data's range (it overflows after scaling)"
            )
        known = scaled[len(scaled) - self.label_len:]
        x_dec = torch.cat([known, torch.zeros(self.pred_len, scaled.shape[1])])  # (S + P, C)
        # One calendar pass over window and future; the decoder's stamps are its last S + P.
        marks = torch.as_tensor(time_features(stamps.append(future), self.freq, cfg.embed))
        m_enc = marks[: self.seq_len]  # (L, F)
        m_dec = marks[self.seq_len - self.label_len:]  # (S + P, F)
        return scaled, m_enc, x_dec, m_dec, future

    def _validated_window(self, frame: pd.DataFrame) -> tuple[np.ndarray, pd.DatetimeIndex]:
        missing = [c for c in [TIME, *self.input_cols] if c not in frame.columns]
        if missing:
            raise RequestError(
                f"missing column(s) {', '.join(missing)}; the model needs "
                f"{', '.join([TIME, *self.input_cols])} (got {', '.join(map(str, frame.columns))})"
            )
        if len(frame) < self.seq_len:
            raise RequestError(
                f"too few rows: the model needs the last {self.seq_len} rows, got {len(frame)}"
            )
        tail = frame.iloc[len(frame) - self.seq_len:]
        stamps = _parse_stamps(tail[TIME], offset=len(frame) - self.seq_len)
        values = _numeric(tail[self.input_cols], offset=len(frame) - self.seq_len)
        expected = pd.date_range(stamps[0], periods=len(stamps), freq=self.freq)
        bad = np.flatnonzero(expected != stamps)
        if len(bad):
            row = int(bad[0]) + len(frame) - self.seq_len
            raise RequestError(
                f"irregular timestamps: row {row} is {stamps[bad[0]]}, expected "
                f"{expected[bad[0]]} (the model's frequency is {self.freq!r}; send consecutive "
                "stamps with no gaps)"
            )
        return values, stamps


def verify_hashes(path: Path) -> None:
    """Refuse a forecaster directory whose files differ from the hashes recorded at saving."""
    if not (path / HASHES).is_file():
        raise ModelLoadError(f"{path} has no {HASHES}; re-log the model with this version")
    recorded = json.loads((path / HASHES).read_text())
    changed = [name for name, digest in recorded.items() if _sha256(path / name) != digest]
    if changed:
        raise ModelLoadError(
            f"{path}: {', '.join(changed)} changed since the model was logged (sha256 mismatch); "
            "refusing to load it. Re-download the model from the registry."
        )


def _sha256(path: Path) -> str:
    if not path.is_file():
        return "missing"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _parse_stamps(column: pd.Series, offset: int) -> pd.DatetimeIndex:
    parsed = pd.to_datetime(column, errors="coerce", utc=True, format="ISO8601")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if len(bad):
        row = int(bad[0])
        raise RequestError(
            f"unparseable timestamp at row {row + offset}: {column.iloc[row]!r} "
            "(send ISO-8601 strings such as 2024-01-31T12:00:00)"
        )
    return pd.DatetimeIndex(parsed).tz_convert(None)


def _numeric(frame: pd.DataFrame, offset: int) -> np.ndarray:
    if all(pd.api.types.is_numeric_dtype(t) for t in frame.dtypes):
        values = frame.to_numpy(dtype=np.float64)
    else:  # text cells become NaN here and are reported below with their position
        values = frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        row, col = bad[0]
        cell = frame.iloc[row, col]
        shown = cell.item() if isinstance(cell, np.generic) else cell  # nan, not np.float64(nan)
        raise RequestError(
            f"column {frame.columns[col]!r} has a missing or non-finite value at row "
            f"{int(row) + offset} ({shown!r}); every value must be a finite number"
        )
    return values

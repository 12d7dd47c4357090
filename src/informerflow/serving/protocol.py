"""Request bodies in, forecast windows out: the wire formats the model server speaks.

Three request shapes reach the same :class:`ForecastRequest` (a DataFrame of the recent window
plus the number of forecast steps wanted):

* **V2 / Open Inference Protocol** (``POST /v2/models/<name>/infer``): one BYTES input named
  ``timestamp`` holding ISO-8601 strings and one numeric input (FP32/FP64, INT cast to float)
  per value column, all with one value per row; ``parameters.horizon`` trims the answer.
* **V1** (``POST /v1/models/<name>:predict``): ``{"instances": [{"timestamp": ..., "<col>": ...},
  ...], "horizon": k}``.
* **MLflow scoring** (``POST /invocations``): one of ``dataframe_split``, ``dataframe_records``,
  ``instances`` or ``inputs``, with ``params.horizon`` (or a top-level ``horizon``).

This module checks only what the wire format decides: keys, shapes, types, column names and the
horizon. The window itself (enough rows, finite values, regular stamps) is judged by
``Forecaster.forecast`` so every consumer of a model rejects bad windows with the same words.
Row numbers in messages are 0-based positions in the request.

Known shortcoming: there is no cap on rows per request; every row is type-checked although only
the last ``seq_len`` are used, so a huge body costs the server time before it is answered.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

from informerflow.errors import RequestError

log = logging.getLogger(__name__)

TIME = "timestamp"
INVOCATION_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
V1_KEYS = ("instances", "inputs")
NUMERIC_V2_TYPES = frozenset(
    {"FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)

Route = Literal["v2", "v1", "invocations"]


@dataclass(frozen=True)
class Schema:
    """What a served model accepts: its value columns, horizon and optional series id column."""

    input_cols: tuple[str, ...]
    pred_len: int
    id_col: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column a request may carry, in the order messages list them."""
        extra = (self.id_col,) if self.id_col else ()
        return (TIME, *extra, *self.input_cols)


@dataclass
class ForecastRequest:
    """One parsed request: the window, the steps to return and where to send the answer."""

    frame: pd.DataFrame
    horizon: int
    route: Route
    request_id: str | None = None


@dataclass(frozen=True)
class InvocationsBody:
    """A decoded ``/invocations`` body on its way through KServe's data plane to the model."""

    body: Any


# -- parsing -------------------------------------------------------------------------------------


def parse_v2(request: InferRequest, schema: Schema) -> ForecastRequest:
    """Turn an Open Inference Protocol request into a window.

    Raises:
        RequestError: naming the input whose name, datatype, shape or data is wrong.
    """
    if not request.inputs:
        raise RequestError(f"the request has no inputs; send one per column: {_listed(schema)}")
    names = [inp.name for inp in request.inputs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise RequestError(f"input(s) {', '.join(map(repr, duplicated))} sent more than once")
    _check_columns(names, schema, what="input")

    columns = {inp.name: _v2_column(inp, schema) for inp in request.inputs}
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name} {n}" for name, n in lengths.items())
        raise RequestError(f"inputs must all have one value per row; lengths differ: {listed}")

    horizon = parse_horizon(
        (request.parameters or {}).get("horizon"), schema.pred_len, "parameters.horizon"
    )
    frame = _frame({name: columns[name] for name in schema.columns if name in columns})
    return ForecastRequest(frame, horizon, "v2", request.id)


def parse_v1(body: Any, schema: Schema) -> ForecastRequest:
    """Turn a KServe V1 body (``{"instances": [records], "horizon": k}``) into a window.

    Raises:
        RequestError: for a body without ``instances``/``inputs``, or records of the wrong form.
    """
    key = _single_key(body, V1_KEYS, route="V1 predict")
    frame = _frame_from_records(body[key], schema, where=key)
    horizon = parse_horizon(body.get("horizon"), schema.pred_len, "horizon")
    return ForecastRequest(frame, horizon, "v1")


def parse_invocations(body: Any, schema: Schema) -> ForecastRequest:
    """Turn an MLflow scoring body into a window.

    ``dataframe_split`` is ``{"columns": [...], "data": [[...], ...]}``; ``dataframe_records``
    is a list of records; ``instances`` and ``inputs`` are a list of records or a mapping of
    column to list of values.

    Raises:
        RequestError: for a body without exactly one accepted key, or data of the wrong form.
    """
    key = _single_key(body, INVOCATION_KEYS, route="/invocations")
    payload = body[key]
    if key == "dataframe_split":
        frame = _frame_from_split(payload, schema)
    elif key == "dataframe_records" or isinstance(payload, list):
        frame = _frame_from_records(payload, schema, where=key)
    elif isinstance(payload, dict):
        frame = _frame_from_columns(payload, schema, where=key)
    else:
        raise RequestError(
            f"'{key}' must be a list of records or an object of column lists, "
            f"got {type(payload).__name__}"
        )
    horizon = parse_horizon(_invocation_horizon(body), schema.pred_len, "params.horizon")
    return ForecastRequest(frame, horizon, "invocations")


def parse_horizon(value: Any, pred_len: int, where: str) -> int:
    """The number of steps to return: ``pred_len`` when absent, else an int in 1..pred_len."""
    if value is None:
        return pred_len
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise RequestError(
            f"{where} must be a whole number from 1 to {pred_len} (the model's pred_len), "
            f"got {value!r}"
        )
    if not 1 <= int(value) <= pred_len:
        raise RequestError(
            f"{where} must be from 1 to {pred_len} (the model's pred_len), got {int(value)}"
        )
    return int(value)


def trim(forecast: pd.DataFrame, horizon: int, id_col: str | None = None) -> pd.DataFrame:
    """Keep the first ``horizon`` steps of each series in ``forecast``."""
    if id_col and id_col in forecast.columns:
        return forecast.groupby(id_col, sort=False).head(horizon).reset_index(drop=True)
    return forecast.head(horizon).reset_index(drop=True)


# -- responses -----------------------------------------------------------------------------------


def v2_response(
    forecast: pd.DataFrame, model_name: str, model_version: str | None, request_id: str | None
) -> InferResponse:
    """One output per forecast column: ``timestamp`` as BYTES, values as FP64, all shape [rows]."""
    outputs = []
    for column in forecast.columns:
        series = forecast[column]
        if column == TIME:
            data = np.array(_iso(series), dtype=np.object_)
            datatype = "BYTES"
        elif pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            data = series.to_numpy(dtype=np.float64)
            datatype = "FP64"
        else:  # a series id of a long-format model
            data = np.array([str(v) for v in series], dtype=np.object_)
            datatype = "BYTES"
        output = InferOutput(name=str(column), shape=[len(series)], datatype=datatype)
        output.set_data_from_numpy(data, binary_data=False)
        outputs.append(output)
    return InferResponse(
        response_id=request_id or str(uuid.uuid4()),
        model_name=model_name,
        model_version=model_version,
        infer_outputs=outputs,
    )


def records_response(
    forecast: pd.DataFrame, model_name: str, model_version: str | None
) -> dict[str, Any]:
    """The V1 and ``/invocations`` answer: ``predictions`` as one record per forecast row."""
    return {
        "model_name": model_name,
        "model_version": model_version,
        "predictions": to_records(forecast),
    }


def to_records(forecast: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts, stamps as ISO-8601 strings and values as Python floats."""
    columns: dict[str, list[Any]] = {}
    for column in forecast.columns:
        series = forecast[column]
        if column == TIME:
            columns[column] = _iso(series)
        elif pd.api.types.is_float_dtype(series):
            columns[column] = [float(v) for v in series]
        else:
            columns[column] = series.tolist()
    return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]


# -- helpers -------------------------------------------------------------------------------------


def _listed(schema: Schema) -> str:
    return ", ".join(schema.columns)


def _iso(stamps: pd.Series) -> list[str]:
    return [pd.Timestamp(ts).isoformat() for ts in stamps]


def _single_key(body: Any, accepted: Sequence[str], route: str) -> str:
    if isinstance(body, bytes | str):
        raise RequestError(
            f"{route} expects a JSON body; send it with Content-Type: application/json"
        )
    if not isinstance(body, dict):
        raise RequestError(
            f"{route} expects a JSON object with one of the keys {', '.join(accepted)}; "
            f"got a JSON {type(body).__name__}"
        )
    present = [k for k in accepted if k in body]
    if not present:
        got = ", ".join(map(str, body)) or "none"
        raise RequestError(
            f"{route} body has none of the accepted keys {', '.join(accepted)} (got keys: {got})"
        )
    if len(present) > 1:
        raise RequestError(f"{route} body must use one of {', '.join(present)}, not several")
    return present[0]


def _invocation_horizon(body: dict[str, Any]) -> Any:
    params = body.get("params")
    if params is not None and not isinstance(params, dict):
        raise RequestError(f"'params' must be an object such as {{\"horizon\": 3}}, got {params!r}")
    from_params = (params or {}).get("horizon")
    top = body.get("horizon")
    if from_params is not None and top is not None and from_params != top:
        raise RequestError(
            f"params.horizon ({from_params!r}) and horizon ({top!r}) disagree; send one of them"
        )
    return from_params if from_params is not None else top


def _check_columns(names: Iterable[str], schema: Schema, what: str) -> None:
    """Name every missing and every unexpected column at once."""
    names = list(names)
    missing = [c for c in schema.columns if c not in names and c != schema.id_col]
    unexpected = [n for n in names if n not in schema.columns]
    problems = []
    if missing:
        problems.append(f"missing {what}(s) {', '.join(map(repr, missing))}")
    if unexpected:
        problems.append(f"unexpected {what}(s) {', '.join(map(repr, unexpected))}")
    if problems:
        raise RequestError(f"{'; '.join(problems)}: the model takes {_listed(schema)}")


def _v2_column(inp: InferInput, schema: Schema) -> list[Any]:
    values = _v2_flat(inp)
    if inp.name in (TIME, schema.id_col):
        if inp.datatype != "BYTES":
            raise RequestError(
                f"input {inp.name!r} must have datatype BYTES (strings), got {inp.datatype}"
            )
        values = [v.decode("utf-8") if isinstance(v, bytes) else v for v in values]
        if inp.name == TIME:
            _check_stamps(values, where=f"input {TIME!r}")
        return values
    if inp.datatype not in NUMERIC_V2_TYPES:
        raise RequestError(
            f"input {inp.name!r} must have a numeric datatype "
            f"({', '.join(sorted(NUMERIC_V2_TYPES))}), got {inp.datatype}"
        )
    return _numbers(values, where=f"input {inp.name!r}")


def _v2_flat(inp: InferInput) -> list[Any]:
    """The input's values as a flat list, after checking them against the declared shape."""
    shape = list(inp.shape)
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise RequestError(f"input {inp.name!r} has an invalid shape {shape}")
    if sum(d != 1 for d in shape) > 1:
        raise RequestError(
            f"input {inp.name!r} has shape {shape}; send one value per row, shape [N] or [N, 1]"
        )
    # Binary tensor extension: KServe decodes the bytes. Not covered by the tests yet.
    if inp._raw_data is not None:
        try:
            values = inp.as_numpy().ravel().tolist()
        except ValueError as exc:
            raise RequestError(
                f"input {inp.name!r}: its binary data does not fit shape {shape}"
            ) from exc
    else:
        values = list(_flatten(inp.data))
    expected = math.prod(shape)
    if expected != len(values):
        raise RequestError(
            f"input {inp.name!r} declares shape {shape} ({expected} values) "
            f"but its data holds {len(values)} values"
        )
    return values


def _flatten(data: Any) -> Iterable[Any]:
    for item in data if isinstance(data, list | tuple) else [data]:
        if isinstance(item, list | tuple):
            yield from _flatten(item)
        else:
            yield item


def _numbers(values: list[Any], where: str) -> list[float | None]:
    """Floats for JSON numbers; a null stays None so the Forecaster can name its row."""
    out: list[float | None] = []
    for row, value in enumerate(values):
        if value is None:
            out.append(None)
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise RequestError(
                f"{where} row {row}: expected a number, got {value!r} ({type(value).__name__})"
            )
        else:
            out.append(float(value))
    return out


def _check_stamps(values: list[Any], where: str) -> None:
    for row, value in enumerate(values):
        if not isinstance(value, str):
            raise RequestError(
                f"{where} row {row}: timestamps must be ISO-8601 strings such as "
                f"2024-01-31T12:00:00, got {value!r} ({type(value).__name__})"
            )


def _frame_from_records(records: Any, schema: Schema, where: str) -> pd.DataFrame:
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise RequestError(
            f"'{where}' must be a list of records like "
            f'{{"{TIME}": "2024-01-31T12:00:00", "{schema.input_cols[0]}": 1.5}}'
        )
    seen: dict[str, None] = {}
    for record in records:
        seen.update(dict.fromkeys(record))
    _check_columns(seen, schema, what="column")
    columns = {name: [r.get(name) for r in records] for name in schema.columns if name in seen}
    return _typed_frame(columns, schema, where)


def _frame_from_columns(payload: dict[str, Any], schema: Schema, where: str) -> pd.DataFrame:
    _check_columns(payload, schema, what="column")
    for name, values in payload.items():
        if not isinstance(values, list):
            raise RequestError(f"'{where}.{name}' must be a list of values, one per row")
    lengths = {name: len(values) for name, values in payload.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name} {n}" for name, n in lengths.items())
        raise RequestError(f"'{where}' columns must all have one value per row; lengths: {listed}")
    return _typed_frame({n: payload[n] for n in schema.columns if n in payload}, schema, where)


def _frame_from_split(payload: Any, schema: Schema) -> pd.DataFrame:
    if not isinstance(payload, dict) or not isinstance(payload.get("columns"), list):
        raise RequestError(
            "'dataframe_split' must be an object with 'columns' (a list of names) and 'data' "
            "(a list of rows)"
        )
    names, rows = payload["columns"], payload.get("data")
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise RequestError("'dataframe_split.data' must be a list of rows, each a list of values")
    for i, row in enumerate(rows):
        if len(row) != len(names):
            raise RequestError(
                f"dataframe_split.data row {i} has {len(row)} values but there are "
                f"{len(names)} columns ({', '.join(map(str, names))})"
            )
    _check_columns(names, schema, what="column")
    by_name = {name: [row[i] for row in rows] for i, name in enumerate(names)}
    return _typed_frame({n: by_name[n] for n in schema.columns if n in by_name}, schema, "data")


def _typed_frame(columns: dict[str, list[Any]], schema: Schema, where: str) -> pd.DataFrame:
    typed: dict[str, list[Any]] = {}
    for name, values in columns.items():
        if name == TIME:
            _check_stamps(values, where=f"'{where}' column {TIME!r}")
            typed[name] = values
        elif name == schema.id_col:
            typed[name] = values
        else:
            typed[name] = _numbers(values, where=f"'{where}' column {name!r}")
    return _frame(typed)


def _frame(columns: dict[str, list[Any]]) -> pd.DataFrame:
    # A column with a null stays of object dtype so the Forecaster's message shows None,
    # what the client sent, rather than the NaN pandas would turn it into.
    return pd.DataFrame({
        name: pd.Series(values, dtype=object if None in values else None)
        for name, values in columns.items()
    })

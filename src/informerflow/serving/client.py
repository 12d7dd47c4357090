"""A small client for our model server's V2 route, used by the deploy step's smoke test.

Uses only the standard library so that checking an endpoint adds no dependency and no proxy
settings are consulted: requests go straight to the URL given.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pandas as pd

from informerflow.errors import DeploymentError

TIME = "timestamp"


def v2_body(frame: pd.DataFrame, horizon: int | None = None) -> dict[str, Any]:
    """An Open Inference Protocol request for ``frame`` (``timestamp`` plus value columns)."""
    inputs = []
    for column in frame.columns:
        values = frame[column]
        if column == TIME:
            data = [str(v) for v in values]
            inputs.append({"name": column, "datatype": "BYTES", "shape": [len(data)],
                           "data": data})
        else:
            inputs.append({"name": column, "datatype": "FP64", "shape": [len(values)],
                           "data": [float(v) for v in values]})
    body: dict[str, Any] = {"inputs": inputs}
    if horizon is not None:
        body["parameters"] = {"horizon": horizon}
    return body


def forecast(url: str, model_name: str, frame: pd.DataFrame, token: str | None = None,
             timeout: float = 30.0) -> pd.DataFrame:
    """POST ``frame`` to ``/v2/models/<model_name>/infer`` and return the forecast rows."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"{url}/v2/models/{model_name}/infer", data=json.dumps(v2_body(frame)).encode(),
        headers=headers, method="POST",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise DeploymentError(f"{url} answered {exc.code} to a forecast request: {detail}") from exc
    except OSError as exc:
        raise DeploymentError(f"could not reach {url}: {exc}") from exc
    return pd.DataFrame({out["name"]: out["data"] for out in answer["outputs"]})

"""Progress events from pipeline steps, which may run in another process.

KFP's local runner copies a step's stdout line by line into the parent's stdout. A step that
wants to show progress prints one marked JSON line per event; the CLI recognises the marker and
draws progress bars, and any other reader (a cluster's log viewer) sees a readable line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

log = logging.getLogger(__name__)

MARKER = "@@informerflow "
ENV_FLAG = "INFORMERFLOW_PROGRESS"


def emit(event: str, **fields: Any) -> None:
    """Report ``event``; printed as a marked line only when a CLI asked for it."""
    if os.environ.get(ENV_FLAG) == "1":
        sys.stdout.write(MARKER + json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()
    else:
        log.debug("%s %s", event, fields)


def parse(line: str) -> dict[str, Any] | None:
    """The event in ``line``, or None when it is an ordinary log line."""
    start = line.find(MARKER)
    if start < 0:
        return None
    try:
        return json.loads(line[start + len(MARKER):])
    except json.JSONDecodeError:
        return None

"""The exceptions informerflow raises on purpose, and how each reaches a user.

Every error a user can cause derives from :class:`InformerflowError`, so library callers can
catch the whole family or one branch of it::

    InformerflowError
    ├── ConfigError        a setting is out of range or contradicts another one
    ├── DataError          an input file cannot be used as it is
    │   └── DataValidationError   several problems found in one validation pass
    ├── RequestError       a forecast request is malformed (HTTP 400)
    ├── ModelLoadError     a model directory is missing, incomplete or tampered with
    ├── TrainingError      training diverged (a loss that is never finite)
    ├── DeploymentError    an endpoint could not be started, reached or stopped
    └── PipelineError      a pipeline step failed for a reason that is not one of the above

``EXIT_CODES`` and ``HTTP_STATUS`` are the only places where these map to a process exit code or
an HTTP status; the CLI and the server look them up instead of deciding on their own.
"""

from __future__ import annotations


class InformerflowError(Exception):
    """Base of every error informerflow raises deliberately."""


class ConfigError(InformerflowError):
    """A configuration value is invalid; the message names the value and the allowed range."""


class DataError(InformerflowError):
    """An input file cannot be used; the message names the file and what to change."""


class DataValidationError(DataError):
    """Validation found one or more problems; all of them are listed, not just the first."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"{source}: {len(self.problems)} {noun} found:\n{lines}")


class RequestError(InformerflowError):
    """A forecast request cannot be answered as sent; maps to HTTP 400."""


class ModelLoadError(InformerflowError):
    """A model cannot be loaded: missing files, a hash mismatch or an unknown format."""


class TrainingError(InformerflowError):
    """Training produced no usable model, e.g. the validation loss was never finite."""


class DeploymentError(InformerflowError):
    """A local or cluster endpoint could not be started, reached or stopped."""


class PipelineError(InformerflowError):
    """A pipeline step failed; the message points to the step's log."""


EXIT_CODES: dict[type[InformerflowError], int] = {
    ConfigError: 2,
    DataError: 2,
    RequestError: 2,
    ModelLoadError: 3,
    DeploymentError: 4,
    PipelineError: 5,
    TrainingError: 6,
}

HTTP_STATUS: dict[type[InformerflowError], int] = {
    RequestError: 400,
    ConfigError: 400,
    DataError: 400,
    ModelLoadError: 503,
    DeploymentError: 503,
}


def _lookup(
    table: dict[type[InformerflowError], int], error: InformerflowError, default: int
) -> int:
    for cls in type(error).__mro__:
        if cls in table:
            return table[cls]
    return default


def exit_code(error: InformerflowError) -> int:
    """The process exit code for ``error`` (1 for a subclass nobody mapped)."""
    return _lookup(EXIT_CODES, error, 1)


def http_status(error: InformerflowError) -> int:
    """The HTTP status for ``error`` (500 for a subclass nobody mapped)."""
    return _lookup(HTTP_STATUS, error, 500)

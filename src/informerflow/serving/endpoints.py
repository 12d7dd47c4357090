"""Local endpoints: model servers running detached on this machine, one record per name.

``start_endpoint`` launches ``python -m informerflow.serving`` in its own session (so it outlives
the CLI that started it), waits for ``/v2/health/ready`` and writes a record::

    <state_dir>/endpoints/<name>.json   name, url, pid, port, host, model, version, started
    <state_dir>/endpoints/<name>.log    the server's stdout and stderr

Starting a name that is already running stops the old server first. The token, when given, goes
to the server through its environment, never its command line (which ``ps`` shows to everyone),
and is not written to the record.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from informerflow import state
from informerflow.errors import ConfigError, DeploymentError

log = logging.getLogger(__name__)

SERVER_MODULE = "informerflow.serving"
TOKEN_ENV = "INFORMERFLOW_TOKEN"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass
class Endpoint:
    """The record of one local endpoint; ``status`` is filled in when listing."""

    name: str
    url: str
    pid: int
    port: int
    host: str
    model_uri: str
    model_name: str
    model_version: str | None
    started: str
    log: str
    status: str = "running"

    @property
    def alive(self) -> bool:
        return self.status == "running"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Endpoint:
        raw = json.loads(text)
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})


def bind_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port``, ready to be handed to the server.

    The model server binds before it loads its model, so a taken port fails in a second rather
    than after the load; ``start_endpoint`` uses the same call to check a port up front.

    Raises:
        DeploymentError: naming the address when it is in use or cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on connections whose socket reports
    # that protocol, and accepted sockets inherit the listener's (0 when left to the default).
    # Without it every response waits ~40 ms for the client's delayed ACK (Nagle's algorithm).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    # Lets a restarted server reuse a port whose old connections linger in TIME_WAIT; a port
    # with a live listener still fails.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise DeploymentError(
            f"cannot listen on {host}:{port}: {exc.strerror}; port {port} is probably in use, "
            "pick another with --port"
        ) from exc
    return sock


def endpoints_dir() -> Path:
    path = state.state_dir() / "endpoints"
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_endpoint(
    name: str,
    model_uri: str,
    port: int,
    host: str = "127.0.0.1",
    tracking_uri: str | None = None,
    token: str | None = None,
    timeout: float = 180.0,
    model_name: str | None = None,
    prediction_log: str | None = None,
) -> Endpoint:
    """Start (or replace) endpoint ``name`` serving ``model_uri`` and wait until it is ready.

    ``prediction_log`` is the server's ``--prediction-log`` (default: the state dir's file).

    Raises:
        ConfigError: the name or port is not acceptable.
        DeploymentError: the port is taken, the server exited, or it was not ready in time;
            the message carries the tail of the server log.
    """
    _check_name(name)
    if not 0 < port < 65536:
        raise ConfigError(f"port must be in 1..65535, got {port}")
    if _record_path(name).exists():
        stop_endpoint(name)
    _check_port_free(host, port)

    log_path = endpoints_dir() / f"{name}.log"
    process = _launch(model_uri, host, port, tracking_uri, token, model_name, log_path,
                      prediction_log)
    url = f"http://{_connect_host(host)}:{port}"
    log.info("started endpoint %s (pid %d) on %s; waiting for it", name, process.pid, url)
    try:
        _wait_ready(process, url, log_path, timeout)
        served, version = _served_model(url, token)
    except BaseException:
        _terminate(process.pid)
        raise

    endpoint = Endpoint(
        name=name, url=url, pid=process.pid, port=port, host=host, model_uri=model_uri,
        model_name=served, model_version=version, log=str(log_path),
        started=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    _record_path(name).write_text(endpoint.to_json())
    log.info("endpoint %s ready: %s serves %s version %s", name, url, served, version)
    return endpoint


def list_endpoints() -> list[Endpoint]:
    """Every recorded endpoint, with ``status`` "running" or "dead" (its process is gone)."""
    endpoints = []
    for path in sorted(endpoints_dir().glob("*.json")):
        try:
            endpoint = Endpoint.from_json(path.read_text())
        except (ValueError, TypeError) as exc:
            log.warning("skipping unreadable endpoint record %s (%s); delete it", path, exc)
            continue
        endpoint.status = "running" if _is_our_server(endpoint.pid) else "dead"
        endpoints.append(endpoint)
    return endpoints


def stop_endpoint(name: str, timeout: float = 15.0) -> Endpoint:
    """Stop endpoint ``name`` (SIGTERM, then SIGKILL after ``timeout``) and drop its record.

    The log file is kept for ``endpoint_logs``.

    Raises:
        DeploymentError: no endpoint of that name is recorded, or it would not stop.
    """
    endpoint = _read(name)
    if _is_our_server(endpoint.pid):
        if not _terminate(endpoint.pid, timeout):
            raise DeploymentError(
                f"endpoint {name} (pid {endpoint.pid}) did not stop within {timeout:.0f}s of "
                "SIGTERM and SIGKILL"
            )
        log.info("stopped endpoint %s (pid %d)", name, endpoint.pid)
    else:
        log.info("endpoint %s (pid %d) was not running; removing its record", name, endpoint.pid)
    _record_path(name).unlink(missing_ok=True)
    endpoint.status = "stopped"
    return endpoint


def endpoint_logs(name: str, lines: int = 50) -> str:
    """The last ``lines`` lines of endpoint ``name``'s server log.

    Raises:
        DeploymentError: there is no log for that name.
    """
    _check_name(name)
    path = endpoints_dir() / f"{name}.log"
    if not path.is_file():
        raise DeploymentError(f"no log for endpoint {name!r}: {path} does not exist")
    return _tail(path, lines)


# -- helpers -------------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if not _NAME.match(name or ""):
        raise ConfigError(
            f"endpoint name {name!r} is not allowed: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def _record_path(name: str) -> Path:
    return endpoints_dir() / f"{name}.json"


def _read(name: str) -> Endpoint:
    _check_name(name)
    path = _record_path(name)
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(endpoints_dir().glob("*.json"))) or "none"
        raise DeploymentError(f"no endpoint named {name!r} (recorded endpoints: {known})")
    return Endpoint.from_json(path.read_text())


def _connect_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to ``host``."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _check_port_free(host: str, port: int) -> None:
    try:
        bind_listener(host, port).close()
    except DeploymentError as exc:
        owner = next((e.name for e in list_endpoints() if e.port == port and e.alive), None)
        used_by = f"endpoint {owner!r}" if owner else "another process"
        raise DeploymentError(
            f"port {port} on {host} is in use by {used_by}; choose another port or stop what "
            "holds it"
        ) from exc


def _launch(
    model_uri: str,
    host: str,
    port: int,
    tracking_uri: str | None,
    token: str | None,
    model_name: str | None,
    log_path: Path,
    prediction_log: str | None = None,
) -> subprocess.Popen:
    command = [
        sys.executable, "-m", SERVER_MODULE,
        "--model-uri", model_uri, "--host", host, "--port", str(port),
    ]
    if tracking_uri:
        command += ["--tracking-uri", tracking_uri]
    if model_name:
        command += ["--name", model_name]
    if prediction_log:
        command += ["--prediction-log", prediction_log]
    env = dict(os.environ)
    env.pop(TOKEN_ENV, None)
    if token:
        env[TOKEN_ENV] = token
    with open(log_path, "ab") as log_file:
        log_file.write(f"--- {datetime.now(UTC).isoformat()} {' '.join(command)}\n".encode())
        log_file.flush()
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # survives the caller and its terminal's signals
        )


def _wait_ready(process: subprocess.Popen, url: str, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise DeploymentError(
                f"the server exited with code {code} before it was ready; last log lines "
                f"({log_path}):\n{_tail(log_path, 20)}"
            )
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise DeploymentError(
        f"the server at {url} was not ready within {timeout:g}s; last log lines "
        f"({log_path}):\n{_tail(log_path, 20)}"
    )


def _served_model(url: str, token: str | None) -> tuple[str, str | None]:
    """Name and version of the one model the server at ``url`` serves."""
    models = _get_json(f"{url}/v2/models", token)["models"]
    if len(models) != 1:
        raise DeploymentError(f"expected one model at {url}, found {models}")
    metadata = _get_json(f"{url}/v2/models/{models[0]}", token)
    versions = metadata.get("versions") or [None]
    return models[0], versions[0]


def _get_json(url: str, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DeploymentError(f"cannot read {url}: {exc}") from exc


def _is_our_server(pid: int) -> bool:
    """True while ``pid`` is a live model server (not a zombie, not a recycled pid)."""
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        zombie = stat.rsplit(")", 1)[-1].split()[0] == "Z"
        return not zombie and SERVER_MODULE.encode() in cmdline
    if sys.platform.startswith("linux"):
        return False
    try:  # no /proc (macOS): existence is all we can check
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _terminate(pid: int, timeout: float = 15.0) -> bool:
    """SIGTERM the server's process group, SIGKILL it after ``timeout``; True once it is gone."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)  # the server leads its own session, so its group id is its pid
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not _is_our_server(pid):
                return True
            time.sleep(0.1)
    return not _is_our_server(pid)


def _reap(pid: int) -> None:
    """Collect the exit status when the server is our own child, so it does not stay a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _tail(path: Path, lines: int) -> str:
    with open(path, errors="replace") as handle:
        return "".join(deque(handle, maxlen=max(lines, 0)))

"""Open a page in headless Chromium and read back what a user would see, over DevTools.

``load(url)`` starts its own Chromium (Debian's package, or ``INFORMERFLOW_CHROMIUM``) with a
throw-away profile and every background network feature off, speaks the Chrome DevTools
Protocol to it over a websocket on 127.0.0.1, and returns the page's console errors, its text,
its ``[data-metric]`` numbers and ``[data-line]`` chart lines, and optionally a PNG screenshot.
Chromium and all its child processes are killed before ``load`` returns, whatever happened.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websocket

ENV_BINARY = "INFORMERFLOW_CHROMIUM"
SETTLE_SECONDS = 0.3  # after the load event, for work the page schedules right after it

# Everything that would make Chromium reach out on its own is off; host names other than
# localhost do not resolve, so a stray URL in a page fails instead of leaving the machine.
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
    "--remote-debugging-address=127.0.0.1", "--no-first-run", "--no-default-browser-check",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--disable-domain-reliability",
    "--disable-client-side-phishing-detection", "--disable-breakpad", "--disable-crash-reporter",
    "--no-pings", "--metrics-recording-only", "--safebrowsing-disable-auto-update",
    "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,"
    "AutofillServerCommunication,CertificateTransparencyComponentUpdater",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--disable-dev-shm-usage", "--password-store=basic", "--use-mock-keychain",
    "--mute-audio", "--hide-scrollbars",
]

# Runs in the page after it settled; plain values come back through returnByValue.
_COLLECT = """(() => {
  const series = (e) => { const s = e.closest("[data-series]");
                          return s ? s.getAttribute("data-series") : null; };
  return {
    title: document.title,
    text: document.body ? document.body.innerText : "",
    metrics: [...document.querySelectorAll("[data-metric]")].map((e) => ({
      metric: e.getAttribute("data-metric"), value: e.getAttribute("data-value"),
      text: e.textContent, series: series(e)})),
    lines: [...document.querySelectorAll("[data-line]")].map((e) => ({
      line: e.getAttribute("data-line"), points: Number(e.getAttribute("data-points")),
      chart: e.closest("[data-chart]") ? e.closest("[data-chart]").getAttribute("data-chart")
                                       : null,
      series: series(e)})),
  };
})()"""


@dataclass
class PageResult:
    """What the page showed. ``errors``/``warnings`` are ``"<source>: <text>"`` strings, the
    source being ``console``, ``exception`` or the browser log's own (``network``, ...)."""

    url: str
    title: str
    text: str
    metrics: list[dict[str, Any]]
    lines: list[dict[str, Any]]
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    extra: Any = None
    screenshot: Path | None = None


def chromium_binary() -> str | None:
    """The Chromium to run: ``$INFORMERFLOW_CHROMIUM``, else the first on PATH."""
    configured = os.environ.get(ENV_BINARY)
    if configured:
        return configured if Path(configured).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_available() -> bool:
    return chromium_binary() is not None


def load(
    url_or_file: str | Path,
    screenshot: Path | None = None,
    width: int = 1200,
    height: int = 900,
    timeout: float = 30,
    script: str | None = None,
) -> PageResult:
    """Open ``url_or_file`` in a fresh headless Chromium and collect what it shows.

    Args:
        url_or_file: a URL, or a path to a local HTML file.
        screenshot: where to write a full-page PNG, if anywhere.
        width, height: the viewport in CSS pixels.
        timeout: seconds for the whole visit, start to screenshot.
        script: a JS expression run after the page settled (a promise is awaited); its
            JSON-able value lands in ``PageResult.extra``.

    Raises:
        RuntimeError: Chromium is missing, would not start, or the page did not load.
        TimeoutError: the browser did not answer within ``timeout``.
    """
    url = Path(url_or_file).resolve().as_uri() if _is_path(url_or_file) else str(url_or_file)
    binary = chromium_binary()
    if binary is None:
        raise RuntimeError(f"no Chromium found; install Debian's chromium or set {ENV_BINARY}")
    deadline = time.monotonic() + timeout

    with tempfile.TemporaryDirectory(prefix="ifl-chromium-", ignore_cleanup_errors=True) as tmp:
        profile, log_path = Path(tmp) / "profile", Path(tmp) / "chromium.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                 "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: one kill ends its children
            )
        try:
            port, path = _devtools_address(profile, proc, log_path, deadline)
            session = _Session(f"ws://127.0.0.1:{port}{path}", deadline)
            try:
                return _visit(session, url, screenshot, width, height, script)
            finally:
                session.close()
        finally:
            _kill(proc)


def _is_path(value: str | Path) -> bool:
    return isinstance(value, Path) or ("://" not in value and not value.startswith("about:"))


def _devtools_address(
    profile: Path, proc: subprocess.Popen, log: Path, deadline: float
) -> tuple[int, str]:
    """Chromium writes its port and browser websocket path here once DevTools listens."""
    marker = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"chromium exited with {proc.returncode} at start:\n{tail}")
        lines = marker.read_text().split("\n") if marker.exists() else []
        if len(lines) >= 2 and lines[0].strip().isdigit() and lines[1].startswith("/"):
            return int(lines[0]), lines[1].strip()
        time.sleep(0.05)
    raise TimeoutError(f"chromium wrote no {marker} in time")


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


class _Session:
    """One DevTools websocket to the browser, driving one page target (flat sessions)."""

    def __init__(self, ws_url: str, deadline: float):
        self.deadline = deadline
        # Chromium refuses DevTools websockets that send an Origin it was not told to allow.
        self.ws = websocket.create_connection(ws_url, timeout=self._left(),
                                              suppress_origin=True)
        self.ids = itertools.count(1)
        self.session_id: str | None = None
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        self.ws.close()

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the browser visit ran past its timeout")
        return left

    def send(self, method: str, params: dict | None = None) -> int:
        msg_id = next(self.ids)
        msg = {"id": msg_id, "method": method, "params": params or {}}
        if self.session_id and not method.startswith("Target."):
            msg["sessionId"] = self.session_id
        self.ws.send(json.dumps(msg))
        return msg_id

    def call(self, method: str, params: dict | None = None) -> dict[str, Any]:
        msg_id = self.send(method, params)
        while True:
            msg = self._receive(self._left())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method} failed: {msg['error']}")
                return msg.get("result", {})

    def wait_for(self, event: str) -> dict[str, Any]:
        for i, msg in enumerate(self.events):
            if msg["method"] == event:
                return self.events.pop(i)
        while True:
            msg = self._receive(self._left())
            if msg.get("method") == event:
                self.events.remove(msg)
                return msg

    def drain(self, seconds: float) -> None:
        """Take in events for ``seconds`` (console output of scripts still running)."""
        end = min(time.monotonic() + seconds, self.deadline)
        while (left := end - time.monotonic()) > 0:
            try:
                self._receive(left)
            except TimeoutError:
                return

    def _receive(self, timeout: float) -> dict[str, Any]:
        self.ws.settimeout(timeout)
        try:
            msg = json.loads(self.ws.recv())
        except websocket.WebSocketTimeoutException as err:
            raise TimeoutError(f"no DevTools message within {timeout:.1f} s") from err
        if "method" in msg:
            self.events.append(msg)
            # A dialog blocks the page and every later call until someone answers it.
            if msg["method"] == "Page.javascriptDialogOpening":
                self.send("Page.handleJavaScriptDialog", {"accept": False})
        return msg


def _visit(
    session: _Session, url: str, screenshot: Path | None, width: int, height: int,
    script: str | None,
) -> PageResult:
    target = session.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    attached = session.call("Target.attachToTarget", {"targetId": target, "flatten": True})
    session.session_id = attached["sessionId"]
    for domain in ("Runtime", "Log", "Page"):
        session.call(f"{domain}.enable")
    session.call("Emulation.setDeviceMetricsOverride",
                 {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    navigated = session.call("Page.navigate", {"url": url})
    if navigated.get("errorText"):
        raise RuntimeError(f"could not open {url}: {navigated['errorText']}")
    session.wait_for("Page.loadEventFired")
    session.drain(SETTLE_SECONDS)

    extra = _evaluate(session, script) if script else None
    page = _evaluate(session, _COLLECT)
    session.drain(0.05)
    if screenshot is not None:
        _screenshot(session, screenshot, width)
    errors, warnings, dialogs = _console(session.events, session.session_id)
    return PageResult(url=url, title=page["title"], text=page["text"], metrics=page["metrics"],
                      lines=page["lines"], errors=errors, warnings=warnings, dialogs=dialogs,
                      extra=extra, screenshot=screenshot)


def _evaluate(session: _Session, expression: str) -> Any:
    result = session.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                               "awaitPromise": True})
    if "exceptionDetails" in result:
        details = result["exceptionDetails"]
        text = details.get("exception", {}).get("description") or details.get("text")
        raise RuntimeError(f"page script failed: {text}")
    return result["result"].get("value")


def _screenshot(session: _Session, path: Path, width: int) -> None:
    size = session.call("Page.getLayoutMetrics")["cssContentSize"]
    session.call("Emulation.setDeviceMetricsOverride",
                 {"width": width, "height": int(size["height"]) + 1, "deviceScaleFactor": 1,
                  "mobile": False})
    shot = session.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    path.write_bytes(base64.b64decode(shot["data"]))


def _console(events: list[dict], session_id: str | None) -> tuple[list, list, list]:
    errors: list[str] = []
    warnings: list[str] = []
    dialogs: list[str] = []
    for event in events:
        if event.get("sessionId") != session_id:
            continue
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning"):
            text = " ".join(_describe(arg) for arg in params.get("args", []))
            (errors if params["type"] == "error" else warnings).append(f"console: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            errors.append(f"exception: {text}")
        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            entry = params["entry"]
            text = f"{entry['source']}: {entry['text']}"
            (errors if entry["level"] == "error" else warnings).append(text)
        elif method == "Page.javascriptDialogOpening":
            dialogs.append(f"{params.get('type')}: {params.get('message')}")
    return errors, warnings, dialogs


def _describe(arg: dict[str, Any]) -> str:
    if "value" in arg:
        return str(arg["value"])
    return str(arg.get("description") or arg.get("type"))

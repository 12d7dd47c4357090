"""The monitoring dashboard page, rendered from data dicts and read back from headless Chromium.

The browser tests open the rendered page from a ``file://`` URL (or, for the refresh, from a
loopback HTTP server started here) in the harness in ``_browser.py`` and check what a user sees:
console errors, text, every number with its formatting, and how many points each chart line has.
"""

from __future__ import annotations

import http.server
import json
import math
import re
import threading
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _browser import PageResult, chromium_available, load
from informerflow.monitoring.dashboard import DATA_ELEMENT_ID, NO_ACTUALS_HINT, render

needs_chromium = pytest.mark.skipif(
    not chromium_available(),
    reason="chromium not installed (apt-get install chromium; .ci/run does) or "
    "INFORMERFLOW_CHROMIUM not set",
)

OVERALL = ["mae", "rmse", "mape", "coverage", "mae_ratio", "test_mae"]
SERIES_OVERALL = ["mae", "rmse", "mape", "coverage"]
DRIFT = ["psi", "ks", "mean_shift", "std_ratio"]
BREAKOUT = "</script><script>window.__pwned = 1; alert(1)</script><!--"
HINT_TEXT = NO_ACTUALS_HINT.replace("`", "")  # the command is shown in a <code>, no backticks


def js_precision4(x: float | None) -> str:
    """What JavaScript's ``x.toPrecision(4)`` prints, "—" for null (ECMA-262 rules)."""
    if x is None:
        return "—"
    if x == 0:
        return "0.000"
    sign, d = ("-" if x < 0 else ""), Decimal(abs(x))  # exact value of the double
    e = d.adjusted()
    n = int(d.scaleb(3 - e).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    if n == 10_000:  # rounded up into the next decade: 9.9996 -> 10.00
        n, e = 1000, e + 1
    digits = str(n)
    if e < -6 or e >= 4:
        return f"{sign}{digits[0]}.{digits[1:]}e{'+' if e >= 0 else '-'}{abs(e)}"
    if e >= 0:
        return sign + digits[: e + 1] + ("." + digits[e + 1:] if e < 3 else "")
    return f"{sign}0.{'0' * (-e - 1)}{digits}"


def test_js_precision4_follows_the_spec() -> None:
    cases = {0.0071: "0.007100", 11.2: "11.20", 1200: "1200", 3.0: "3.000", 1.5e-7: "1.500e-7",
             12345.678: "1.235e+4", -9.1: "-9.100", 9.99961: "10.00", 0.000001234: "0.000001234"}
    assert {x: js_precision4(x) for x in cases} == cases


def _minutes(start: int, n: int) -> list[str]:
    return [f"1970-01-07T{12 + m // 60:02d}:{m % 60:02d}:00" for m in range(start, start + n)]


def _series(sid: str, phase: float, n: int = 200) -> dict[str, Any]:
    times = _minutes(0, n)
    actual = [round(0.05 + 0.02 * math.sin(i / 15 + phase), 6) for i in range(n)]
    forecast = [round(a + 0.003 * math.cos(i / 7), 6) for i, a in enumerate(actual)]
    return {
        "id": sid,
        "actual": {"time": times, "value": actual},
        "forecast": {"time": times, "value": forecast},
        "latest": {"time": _minutes(n, 24), "value": [0.05 + 0.001 * i for i in range(24)]},
        "accuracy": [{"time": times[i], "mae": 0.002 + i * 1e-5, "rmse": 0.003, "mape": 3.5,
                      "n": 20} for i in range(0, n, 20)],
        "drift": [{"time": times[i], "psi": 0.1 + i / 97, "ks": 0.08 + i / 1000}
                  for i in range(0, n, 20)],
        "overall": {"mae": 0.0021 + phase / 1000, "rmse": 0.0031, "mape": 3.6, "coverage": 0.95},
    }


def _data(series: list[dict], monitor: dict | None) -> dict[str, Any]:
    return {"model": {"name": "alibaba-pod-cpu", "version": "3",
                      "uri": "models:/alibaba-pod-cpu@champion"},
            "generated_at": "2026-12-04T19:30:00+00:00", "monitor": monitor, "series": series}


def _monitor(alert: bool = True) -> dict[str, Any]:
    return {
        "ran_at": "2026-12-04T19:29:00+00:00", "actuals": "/path/actuals.csv", "alert": alert,
        "alerts": ["accuracy: MAE 0.0071 is 3.1x the model's test MAE 0.0023 (limit 1.5x)",
                   "drift: cpu_utilization PSI 8.27 > 0.25"] if alert else [],
        "overall": {"mae": 0.0071, "rmse": 0.009, "mape": 11.2, "coverage": 0.98,
                    "n_pairs": 1200, "test_mae": 0.0023, "mae_ratio": 3.1},
        "drift": {
            "cpu_utilization": {"psi": 8.27, "ks": 0.99, "ks_pvalue": 0.0, "mean_shift": 9.1,
                                "std_ratio": 3.0, "n": 9000},
            # Extremes, to pin the exponent forms of toPrecision, and a negative shift.
            "memory": {"psi": 1.5e-7, "ks": 0.0, "ks_pvalue": 1.0, "mean_shift": -12345.678,
                       "std_ratio": None, "n": 9000},
        },
    }


def realistic_data() -> dict[str, Any]:
    a, b = _series("pod-a", 0.0), _series("pod-b", 1.0)
    b["actual"]["value"][50] = None  # a gap: drawn as two segments, 199 points
    b["overall"]["coverage"] = None
    return _data([a, b], _monitor())


def expected_metrics(data: dict[str, Any]) -> dict[tuple[str | None, str], float | None]:
    """(series id or None for the top, data-metric) -> the number the page must show."""
    monitor = data["monitor"]
    expected = {(None, name): monitor["overall"][name] for name in OVERALL}
    for col, stats in monitor["drift"].items():
        expected |= {(None, f"{name}:{col}"): stats[name] for name in DRIFT}
    for s in data["series"]:
        expected |= {(s["id"], name): s["overall"][name] for name in SERIES_OVERALL}
        expected |= {(s["id"], name): s["drift"][-1][name] for name in ("psi", "ks")}
    return expected


def _open(tmp_path: Path, data: dict[str, Any], **kwargs: Any) -> PageResult:
    page = tmp_path / "dashboard.html"
    page.write_text(render(data), encoding="utf-8")
    return load(page.as_uri(), **kwargs)


# --- without a browser --------------------------------------------------------------------

def test_page_references_nothing_outside() -> None:
    page = render(realistic_data())
    # The SVG namespace is a name the script passes to createElementNS; it is never fetched.
    assert set(re.findall(r"https?://[^\s\"'<>)]*", page)) == {"http://www.w3.org/2000/svg"}
    assert re.search(r"""["'(=]\s*//""", page) is None  # no scheme-relative URL
    assert re.search(r"\b(src|href|srcset|action)\s*=|@import|url\(", page, re.I) is None


def test_series_id_cannot_close_the_data_script() -> None:
    data = _data([{"id": BREAKOUT, "actual": {"time": [], "value": []}}], None)
    page = render(data)

    assert page.lower().count("</script") == 2  # the data's and the code's own closing tags
    assert "<!--" not in page
    embedded = re.search(rf'<script type="application/json" id="{DATA_ELEMENT_ID}">(.*?)</script>',
                          page, re.S)
    assert json.loads(embedded.group(1))["series"][0]["id"] == BREAKOUT


def test_render_writes_non_finite_as_null_and_converts_numpy() -> None:
    monitor = {"overall": {"mae": float("nan"), "rmse": np.float32(0.5), "n_pairs": np.int64(7),
                           "mape": float("inf"), "last": np.array([1.5, np.nan])}}
    page = render(_data([], monitor))

    embedded = re.search(r'id="dashboard-data">(.*?)</script>', page, re.S).group(1)
    assert json.loads(embedded)["monitor"]["overall"] == {
        "mae": None, "rmse": 0.5, "n_pairs": 7, "mape": None, "last": [1.5, None]}


def test_render_rejects_what_json_cannot_hold() -> None:
    with pytest.raises(TypeError, match=r"data\['monitor'\]\['ran_at'\] is a object"):
        render(_data([], {"ran_at": object()}))
    with pytest.raises(TypeError, match="must be a mapping, got list"):
        render([1, 2])  # type: ignore[arg-type]


# --- in Chromium --------------------------------------------------------------------------

_STATE_JS = """({version: document.getElementById("model-version").textContent,
  alert: document.getElementById("alert").className,
  pwned: typeof window.__pwned})"""


@pytest.fixture(scope="module")
def realistic(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, PageResult]:
    """One browser visit shared by the checks on the realistic page (one start, ~2 s)."""
    if not chromium_available():
        pytest.skip("chromium not installed")
    data = realistic_data()
    tmp = tmp_path_factory.mktemp("dashboard")
    return data, _open(tmp, data, screenshot=tmp / "dashboard.png", script=_STATE_JS)


@needs_chromium
def test_realistic_page_loads_cleanly(realistic: tuple[dict, PageResult]) -> None:
    _, page = realistic
    assert (page.errors, page.warnings, page.dialogs) == ([], [], [])
    assert page.title == "informerflow monitoring: alibaba-pod-cpu"
    assert page.screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert HINT_TEXT not in page.text


@needs_chromium
def test_version_and_alert_lines_are_shown(realistic: tuple[dict, PageResult]) -> None:
    data, page = realistic
    assert page.extra == {"version": "3", "alert": "alert on", "pwned": "undefined"}
    assert "last monitor run: 2026-12-04 19:29 UTC" in page.text
    for line in data["monitor"]["alerts"]:
        assert line in page.text


@needs_chromium
def test_each_series_has_its_section_and_charts(realistic: tuple[dict, PageResult]) -> None:
    _, page = realistic
    charts = {(line["series"], line["chart"], line["line"]) for line in page.lines}
    per_series = {("forecast", "actual"), ("forecast", "forecast"), ("forecast", "latest"),
                  ("accuracy", "mae"), ("drift", "psi")}
    assert charts == {(sid, *c) for sid in ("pod-a", "pod-b") for c in per_series}
    assert "series pod-a" in page.text and "series pod-b" in page.text


@needs_chromium
def test_every_number_is_shown_to_4_significant_digits(
    realistic: tuple[dict, PageResult],
) -> None:
    data, page = realistic
    shown = {(m["series"], m["metric"]): (m["value"], m["text"]) for m in page.metrics}
    expected = expected_metrics(data)

    assert len(page.metrics) == len(shown)  # no number shown twice under one name
    assert shown.keys() == expected.keys()
    for key, value in expected.items():
        raw, text = shown[key]
        assert (None if raw == "null" else float(raw)) == value, key
        assert text == js_precision4(value), key
    assert shown[(None, "mean_shift:memory")][1] == "-1.235e+4"
    assert shown[("pod-b", "coverage")] == ("null", "—")


@needs_chromium
def test_line_point_counts_match_the_data(realistic: tuple[dict, PageResult]) -> None:
    data, page = realistic
    counts = {(line["series"], line["line"]): line["points"] for line in page.lines}
    for s in data["series"]:
        drawn = lambda values: sum(v is not None for v in values)  # noqa: E731
        assert counts[(s["id"], "actual")] == drawn(s["actual"]["value"])
        assert counts[(s["id"], "forecast")] == len(s["forecast"]["value"]) == 200
        assert counts[(s["id"], "latest")] == 24
        assert counts[(s["id"], "mae")] == counts[(s["id"], "psi")] == 10
    assert counts[("pod-b", "actual")] == 199


@needs_chromium
@pytest.mark.parametrize("series", [
    [],
    [{"id": "", "actual": {"time": [], "value": []}, "forecast": {"time": [], "value": []},
      "latest": {"time": [], "value": []}, "accuracy": [], "drift": [],
      "overall": {"mae": None, "rmse": None, "mape": None, "coverage": None}}],
], ids=["no-series", "empty-series"])
def test_before_any_monitor_run_it_says_no_actuals_yet(tmp_path: Path, series: list) -> None:
    page = _open(tmp_path, _data(series, None), script=_STATE_JS)

    assert (page.errors, page.dialogs) == ([], [])
    assert HINT_TEXT in page.text
    assert "last monitor run: never" in page.text
    assert page.extra == {"version": "3", "alert": "alert off", "pwned": "undefined"}
    assert {(m["metric"], m["value"], m["text"]) for m in page.metrics} == (
        {(name, "null", "—") for name in [*SERIES_OVERALL, "psi", "ks"]} if series else set())
    assert [line["points"] for line in page.lines] == [0] * 5 * len(series)


@needs_chromium
def test_markup_in_series_ids_and_alerts_is_shown_as_text(tmp_path: Path) -> None:
    monitor = _monitor() | {"alerts": [f"drift in {BREAKOUT}", "<b>not bold</b>"]}
    page = _open(tmp_path, _data([_series(BREAKOUT, 0.0, n=5)], monitor), script=_STATE_JS)

    assert (page.errors, page.dialogs) == ([], [])
    assert page.extra["pwned"] == "undefined"
    assert {line["series"] for line in page.lines} == {BREAKOUT}
    assert f"series {BREAKOUT}" in page.text and "<b>not bold</b>" in page.text


_REFRESH_JS = """(async () => {
  const state = () => ({version: document.getElementById("model-version").textContent,
    alert: document.getElementById("alert").className,
    note: document.getElementById("refresh-note").hidden ? ""
          : document.getElementById("refresh-note").textContent,
    sections: document.querySelectorAll("section.series").length});
  const before = state();
  await window.dashboardRefresh();
  const refreshed = state();
  await window.dashboardRefresh();
  return {before, refreshed, failed: state()};
})()"""


@pytest.fixture
def dashboard_server() -> Iterator[tuple[str, list[tuple[int, bytes]]]]:
    """Serves the page at /dashboard and pops queued (status, body) replies at /dashboard/data."""
    page = render(realistic_data()).encode()
    replies: list[tuple[int, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server looks up
            if self.path == "/dashboard":
                status, body, kind = 200, page, "text/html; charset=utf-8"
            elif self.path == "/dashboard/data" and replies:
                (status, body), kind = replies.pop(0), "application/json"
            else:
                status, body, kind = 404, b"", "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dashboard", replies
    finally:
        server.shutdown()
        server.server_close()


@needs_chromium
def test_refresh_redraws_from_the_server_and_survives_a_failure(
    dashboard_server: tuple[str, list[tuple[int, bytes]]],
) -> None:
    url, replies = dashboard_server
    newer = _data([_series("pod-a", 0.5, n=30)], _monitor(alert=False))
    newer["model"]["version"] = "4"
    replies += [(200, json.dumps(newer).encode()), (500, b'{"error": "boom"}')]

    page = load(url, script=_REFRESH_JS)

    assert page.extra["before"] == {"version": "3", "alert": "alert on", "note": "", "sections": 2}
    assert page.extra["refreshed"] == {"version": "4", "alert": "alert off", "note": "",
                                       "sections": 1}
    failed = page.extra["failed"]
    assert (failed["version"], failed["sections"]) == ("4", 1)  # the last good data stays
    assert re.fullmatch(r"refresh failed at \d\d:\d\d:\d\d UTC \(HTTP 500\); showing older data",
                        failed["note"])
    # The only error is the browser's own note of the 500; the page's script threw nothing.
    assert len(page.errors) == 1 and page.errors[0].startswith("network: ")
    assert "500" in page.errors[0]
    assert [line["points"] for line in page.lines if line["line"] == "actual"] == [30]


def test_harness_says_when_chromium_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INFORMERFLOW_CHROMIUM", str(tmp_path / "no-such-chromium"))
    assert not chromium_available()
    with pytest.raises(RuntimeError, match="no Chromium found; install Debian's chromium"):
        load(tmp_path / "page.html")


@needs_chromium
def test_harness_reports_a_page_that_cannot_open(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"could not open file://.*missing\.html: "
                                           r"net::ERR_FILE_NOT_FOUND"):
        load(tmp_path / "missing.html")

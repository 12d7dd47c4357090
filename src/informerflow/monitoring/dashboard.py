"""The monitoring dashboard: one self-contained HTML page drawn from the monitor's data dict.

``render(data)`` embeds ``data`` as JSON in the page; the page's own script draws everything
from it (inline SVG, no library) and fetches fresh data every ``REFRESH_SECONDS`` from the
same origin, at the page's own path plus ``/data`` (``/dashboard`` -> ``/dashboard/data``).
Nothing is loaded from anywhere else, so the page works offline; a Content-Security-Policy
that allows only this page's own script and style (by hash) enforces that in the browser.

The data dict (every number may be null, every list may be empty)::

    model:        {name, version, uri}
    generated_at: ISO time
    monitor:      null, or {ran_at, actuals, alert, alerts: [str],
                            overall: {mae, rmse, mape, coverage, n_pairs, test_mae, mae_ratio},
                            drift: {column: {psi, ks, ks_pvalue, mean_shift, std_ratio, n}}}
    series:       [{id, actual: {time, value}, forecast: {time, value}, latest: {time, value},
                    accuracy: [{time, mae, rmse, mape, n}], drift: [{time, psi, ks}],
                    overall: {mae, rmse, mape, coverage}}]

Times are ISO strings; one without an offset is read as UTC.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import json
import logging
import math
import re
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

PAGE_TITLE = "informerflow monitoring"
REFRESH_SECONDS = 30
DATA_ELEMENT_ID = "dashboard-data"
NO_ACTUALS_HINT = "no actuals yet: run `informerflow monitor --actuals FILE`"

_CSS = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2430;
       background: #f6f7f9; margin: 0; }
main { max-width: 1200px; margin: 0 auto; padding: 16px 24px 40px; }
h1 { font-size: 22px; margin: 0; }
h2 { font-size: 17px; margin: 0 0 8px; }
h3 { font-size: 13px; font-weight: 600; margin: 0 0 2px; color: #4a5465; }
.meta { color: #4a5465; margin: 2px 0 12px; }
.alert { border-radius: 6px; padding: 8px 12px; margin: 8px 0 14px; }
.alert.on { background: #fde8e8; border: 1px solid #e0a1a1; color: #7a1212; }
.alert.off { background: #e9f5ec; border: 1px solid #a9d3b3; color: #1c5a2b; }
.alert.off[data-state="never"] { background: #eef0f3; border-color: #cfd4dc; color: #4a5465; }
.alert ul { margin: 4px 0 0; padding-left: 20px; }
.hint { background: #fff8e1; border: 1px solid #e6d28c; border-radius: 6px; padding: 8px 12px; }
.hint code { background: #f3ecd0; padding: 0 3px; }
.cards { display: flex; flex-wrap: wrap; gap: 8px; margin: 6px 0 12px; }
.card { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; padding: 6px 10px;
        min-width: 92px; }
.card .label { display: block; color: #5d6677; font-size: 12px; }
.card .num { font-size: 17px; font-variant-numeric: tabular-nums; }
table { border-collapse: collapse; background: #fff; margin: 6px 0 12px; }
th, td { border: 1px solid #dde1e7; padding: 3px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.series { background: #fff; border: 1px solid #dde1e7; border-radius: 8px; padding: 12px 16px;
          margin: 16px 0; }
.charts { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
.charts figure:first-child { grid-column: 1 / -1; }
figure { margin: 0; }
svg { width: 100%; height: auto; display: block; background: #fcfcfd; }
svg .frame { fill: none; stroke: #c5cbd5; }
svg .axis { font-size: 11px; fill: #5d6677; }
svg .empty { font-size: 13px; fill: #8a93a3; }
svg .line { fill: none; stroke-width: 1.5; stroke-linejoin: round; stroke-linecap: round; }
.legend { font-size: 12px; color: #4a5465; }
.legend span { margin-right: 14px; white-space: nowrap; }
.legend i { display: inline-block; width: 18px; height: 0; border-top-width: 2px;
            border-top-style: solid; vertical-align: middle; margin-right: 4px; }
.line-actual { stroke: #1d2430; border-color: #1d2430; }
.line-forecast { stroke: #1f6fd1; border-color: #1f6fd1; }
.line-latest { stroke: #e0701b; border-color: #e0701b; stroke-dasharray: 5 3; }
.legend .line-latest { border-top-style: dashed; }
.line-mae { stroke: #2d8a44; border-color: #2d8a44; }
.line-psi { stroke: #8a3fb8; border-color: #8a3fb8; }
#refresh-note { color: #7a1212; font-size: 12px; }
footer { color: #8a93a3; font-size: 12px; }
"""

# Drawn from the embedded JSON with createElement/textContent only: no data ever reaches
# innerHTML, so a series id or alert line cannot inject markup.
_JS = """
"use strict";
(function () {
  const SVG_NS = "http://www.w3.org/2000/svg";  // a namespace name, never fetched
  const REFRESH_MS = @@REFRESH_MS@@;
  const HINT = @@HINT@@;
  // Chart box in SVG user units; the wide chart gets a wider box so its text stays small.
  const NARROW = 560, WIDE = 1140, L = 64, R = 12, T = 10, B = 28;
  const OVERALL = [["mae", "MAE"], ["rmse", "RMSE"], ["mape", "MAPE %"],
                   ["coverage", "coverage"], ["mae_ratio", "MAE / test MAE"],
                   ["test_mae", "test MAE"]];
  const DRIFT = [["psi", "PSI"], ["ks", "KS"], ["mean_shift", "mean shift"],
                 ["std_ratio", "std ratio"]];
  const LABELS = {actual: "actual", forecast: "forecast (1 step ahead)",
                  latest: "latest forecast", mae: "MAE", psi: "PSI"};

  function node(ns, tag, attrs, text) {
    const e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }
  const el = (tag, attrs, text) => node(null, tag, attrs, text);
  const svg = (tag, attrs, text) => node(SVG_NS, tag, attrs, text);
  const num = (v) => (typeof v === "number" && isFinite(v) ? v : null);
  const fmt = (v) => (v === null ? "\\u2014" : v.toPrecision(4));
  const obj = (v) => (v && typeof v === "object" && !Array.isArray(v) ? v : {});
  const arr = (v) => (Array.isArray(v) ? v : []);

  function metric(name, value) {
    const v = num(value);
    return el("span", {"class": "num", "data-metric": name,
                       "data-value": v === null ? "null" : String(v)}, fmt(v));
  }

  // Date.parse reads an ISO time without an offset as local time; ours are UTC.
  function parseTime(s) {
    if (typeof s !== "string") return NaN;
    let t = s.trim().replace(" ", "T");
    if (/T[0-9:.]+$/.test(t)) t += "Z";
    return Date.parse(t);
  }
  function showTime(s) {
    const ms = parseTime(s);
    if (isNaN(ms)) return typeof s === "string" && s ? s : "\\u2014";
    return new Date(ms).toISOString().slice(0, 16).replace("T", " ") + " UTC";
  }

  function columns(times, values) {
    const t = arr(times), v = arr(values);
    return t.map((x, i) => ({x: parseTime(x), y: num(v[i])})).filter((p) => !isNaN(p.x));
  }
  function rows(list, key) {
    return arr(list).map((r) => ({x: parseTime(obj(r).time), y: num(obj(r)[key])}))
      .filter((p) => !isNaN(p.x));
  }

  // A loop, not Math.min(...v): spreading a long series overflows the call stack.
  function extent(values) {
    let lo = Infinity, hi = -Infinity;
    for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
    return [lo, hi];
  }
  function padded([lo, hi]) {
    const pad = Math.abs(lo) * 0.1 || 1;
    return lo === hi ? [lo - pad, hi + pad] : [lo, hi];
  }

  // Nulls break a line into segments; a lone point is drawn as a dot (zero-length, round cap).
  function pathData(points, sx, sy) {
    const segments = [[]];
    for (const p of points) {
      if (p.y === null) { if (segments[segments.length - 1].length) segments.push([]); continue; }
      segments[segments.length - 1].push(sx(p.x).toFixed(1) + "," + sy(p.y).toFixed(1));
    }
    return segments.filter((s) => s.length)
      .map((s) => "M" + s.join("L") + (s.length === 1 ? "h0" : "")).join("");
  }

  function chart(kind, lines) {
    const [W, H] = kind === "forecast" ? [WIDE, 230] : [NARROW, 180];
    const box = svg("svg", {"data-chart": kind, viewBox: "0 0 " + W + " " + H,
                            role: "img", "aria-label": kind + " chart"});
    box.append(svg("rect", {"class": "frame", x: L, y: T, width: W - L - R, height: H - T - B}));
    const drawn = lines.flatMap((l) => l.points.filter((p) => p.y !== null));
    let sx = () => L, sy = () => H - B;
    if (drawn.length) {
      const [first, last] = extent(drawn.map((p) => p.x));
      const [lo, hi] = extent(drawn.map((p) => p.y));
      const [x0, x1] = padded([first, last]), [y0, y1] = padded([lo, hi]);
      sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
      sy = (y) => H - B - (y - y0) / (y1 - y0) * (H - T - B);
      const text = (x, y, anchor, s) => box.append(
        svg("text", {"class": "axis", x: x, y: y, "text-anchor": anchor}, s));
      text(L - 4, sy(hi) + 4, "end", fmt(hi));
      text(L - 4, sy(lo) + 4, "end", fmt(lo));
      text(L, H - 8, "start", showTime(new Date(first).toISOString()));
      text(W - R, H - 8, "end", showTime(new Date(last).toISOString()));
    } else {
      box.append(svg("text", {"class": "empty", x: W / 2, y: H / 2, "text-anchor": "middle"},
                     "no data yet"));
    }
    for (const l of lines) {
      box.append(svg("path", {"class": "line line-" + l.name, "data-line": l.name,
                              "data-points": l.points.filter((p) => p.y !== null).length,
                              d: pathData(l.points, sx, sy)}));
    }
    return box;
  }

  function figure(kind, title, lines) {
    const f = el("figure");
    f.append(el("h3", {}, title), chart(kind, lines));
    const legend = el("div", {"class": "legend"});
    for (const l of lines) {
      const item = el("span");
      item.append(el("i", {"class": "line-" + l.name}), LABELS[l.name]);
      legend.append(item);
    }
    f.append(legend);
    return f;
  }

  // items: [metric name, label, value]
  function cards(items) {
    const box = el("div", {"class": "cards"});
    for (const [name, label, value] of items) {
      const card = el("div", {"class": "card"});
      card.append(el("span", {"class": "label"}, label), metric(name, value));
      box.append(card);
    }
    return box;
  }

  function driftTable(drift) {
    const cols = Object.keys(obj(drift));
    if (!cols.length) return el("p", {"class": "meta"}, "no drift measured yet");
    const table = el("table"), head = el("tr");
    head.append(el("th", {}, "input drift"), ...DRIFT.map(([, label]) => el("th", {}, label)));
    table.append(head);
    for (const col of cols) {
      const tr = el("tr");
      tr.append(el("td", {}, col));
      for (const [name] of DRIFT) {
        const td = el("td");
        td.append(metric(name + ":" + col, obj(drift[col])[name]));
        tr.append(td);
      }
      table.append(tr);
    }
    return table;
  }

  function alertBanner(monitor) {
    const on = monitor !== null && monitor.alert === true;
    const box = el("div", {id: "alert", "class": on ? "alert on" : "alert off"});
    if (!on) {
      box.setAttribute("data-state", monitor === null ? "never" : "quiet");
      box.textContent = monitor === null ? "no monitor run yet" : "no alerts";
      return box;
    }
    box.append(el("strong", {}, "alert"));
    const list = el("ul");
    for (const line of arr(monitor.alerts)) list.append(el("li", {}, String(line)));
    box.append(list);
    return box;
  }

  function seriesSection(s) {
    const id = s.id === null || s.id === undefined ? "" : String(s.id);
    const sec = el("section", {"class": "series", "data-series": id});
    sec.append(el("h2", {}, id === "" ? "series" : "series " + id));
    const overall = obj(s.overall);
    const last = arr(s.drift).length ? obj(s.drift[s.drift.length - 1]) : {};
    sec.append(cards([...OVERALL.slice(0, 4).map(([n, label]) => [n, label, overall[n]]),
                      ["psi", "latest PSI", last.psi], ["ks", "latest KS", last.ks]]));
    const grid = el("div", {"class": "charts"});
    grid.append(
      figure("forecast", "recent actuals and forecasts", [
        {name: "actual", points: columns(obj(s.actual).time, obj(s.actual).value)},
        {name: "forecast", points: columns(obj(s.forecast).time, obj(s.forecast).value)},
        {name: "latest", points: columns(obj(s.latest).time, obj(s.latest).value)}]),
      figure("accuracy", "accuracy over time (MAE)",
             [{name: "mae", points: rows(s.accuracy, "mae")}]),
      figure("drift", "drift over time (PSI)", [{name: "psi", points: rows(s.drift, "psi")}]));
    sec.append(grid);
    return sec;
  }

  function hint() {
    const p = el("p", {"class": "hint", id: "no-actuals"});
    const [before, cmd] = HINT.split("`");
    p.append(before, el("code", {}, cmd));
    return p;
  }

  function draw(data) {
    const d = obj(data), model = obj(d.model), series = arr(d.series).map(obj);
    const monitor = d.monitor && typeof d.monitor === "object" ? d.monitor : null;
    const parts = [];
    const header = el("header");
    header.append(el("h1", {}, String(model.name || "model")));
    const meta = el("p", {"class": "meta"});
    const version = model.version === null || model.version === undefined ? "\\u2014"
      : String(model.version);
    meta.append("version ", el("strong", {id: "model-version"}, version),
                model.uri ? " \\u00b7 " + model.uri : "",
                " \\u00b7 last monitor run: ",
                el("span", {id: "monitor-time"}, monitor ? showTime(monitor.ran_at) : "never"),
                " \\u00b7 data as of " + showTime(d.generated_at));
    header.append(meta);
    parts.push(header, alertBanner(monitor));

    const anyActuals = series.some((s) => arr(obj(s.actual).value).length);
    if (monitor === null || !anyActuals) parts.push(hint());
    if (monitor !== null) {
      const overall = obj(monitor.overall);
      parts.push(el("h2", {}, "overall"),
                 cards(OVERALL.map(([n, label]) => [n, label, overall[n]])),
                 driftTable(monitor.drift));
    }
    parts.push(...series.map(seriesSection));
    document.getElementById("app").replaceChildren(...parts);
  }

  function note(text) {
    const n = document.getElementById("refresh-note");
    n.textContent = text;
    n.hidden = !text;
  }

  // Resolves either way: a failed refresh keeps the last good page and says so.
  async function refresh() {
    try {
      const url = location.pathname.replace(/\\/+$/, "") + "/data";
      const response = await fetch(url, {cache: "no-store"});
      if (!response.ok) throw new Error("HTTP " + response.status);
      draw(await response.json());
      note("");
    } catch (err) {
      note("refresh failed at " + new Date().toISOString().slice(11, 19) + " UTC ("
           + (err && err.message ? err.message : err) + "); showing older data");
    }
  }

  try {
    draw(JSON.parse(document.getElementById("@@DATA_ID@@").textContent));
  } catch (err) {
    note("could not draw the dashboard: " + err);
    console.error(err);
  }
  window.dashboardRefresh = refresh;  // also lets a test or a user refresh on demand
  setInterval(refresh, REFRESH_MS);
})();
"""

_SCRIPT = (_JS.replace("@@REFRESH_MS@@", str(REFRESH_SECONDS * 1000))
           .replace("@@HINT@@", json.dumps(NO_ACTUALS_HINT))
           .replace("@@DATA_ID@@", DATA_ELEMENT_ID))


def _csp_hash(source: str) -> str:
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


# connect-src 'self' is what the refresh needs; everything else is this page's own code.
_CSP = (f"default-src 'none'; script-src {_csp_hash(_SCRIPT)}; style-src {_csp_hash(_CSS)}; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'")

_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>@@TITLE@@</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<div id="app"></div>
<p id="refresh-note" hidden></p>
<footer>{PAGE_TITLE}; refreshes every {REFRESH_SECONDS} s</footer>
</main>
<script type="application/json" id="{DATA_ELEMENT_ID}">@@DATA@@</script>
<script>{_SCRIPT}</script>
</body>
</html>
"""

# Inside a JSON string these escapes read back as the same text, but "</script" or "<!--"
# can no longer end the script element early.
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}


def render(data: Mapping[str, Any]) -> str:
    """Return the dashboard page for ``data`` (see the module docstring for its shape).

    NaN and infinite numbers become null; numpy scalars and datetimes are converted.

    Raises:
        TypeError: ``data`` is not a mapping or holds a value JSON cannot represent.
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"dashboard data must be a mapping, got {type(data).__name__}")
    payload = json.dumps(_plain(data), allow_nan=False, ensure_ascii=False)
    payload = re.sub("[<>&]", lambda m: _JSON_ESCAPES[m.group()], payload)
    model = data.get("model") if isinstance(data.get("model"), Mapping) else {}
    title = f"{PAGE_TITLE}: {model.get('name') or 'model'}"
    fields = {"TITLE": html.escape(title), "DATA": payload}
    logger.debug("dashboard page for %s: %d characters of data", title, len(payload))
    # One pass, so text inside the data can never be taken for a second marker.
    return re.sub("@@(TITLE|DATA)@@", lambda m: fields[m.group(1)], _PAGE)


def _plain(value: Any, where: str = "data") -> Any:
    """``value`` as plain JSON types: non-finite floats -> None, numpy scalars -> Python."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if callable(getattr(value, "tolist", None)):  # numpy scalar or array
        return _plain(value.tolist(), where)
    raise TypeError(f"{where} is a {type(value).__name__} ({value!r:.60}); the dashboard shows "
                    "only JSON values, numpy numbers and datetimes")

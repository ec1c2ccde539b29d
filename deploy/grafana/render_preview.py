# ruff: noqa: E501  (the page's CSS is kept one rule per line)
"""Render a preview PNG of the dashboard from its JSON (layout, titles, panel types, legends, units).

Not Grafana: the panels are drawn by a small HTML page from `valdrix-gate.json` and filled with synthetic,
deterministic series (labelled as such), then screenshotted by headless Chromium through Playwright.
Needs `chromium` (Debian) and the `playwright` package (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1); not part of the
test suite. Run: python deploy/grafana/render_preview.py docs/images/dashboard.png
"""

from __future__ import annotations

import html
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parent / "valdrix-gate.json"
COLOURS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#b877d9", "#f2495c", "#8ab8ff", "#fade2a"]
UNIT = {"reqps": " req/s", "s": " s", "percentunit": "%", "currencyUSD": " USD", "short": ""}
# Example label values per label name, so legends read like real series.
SAMPLES = {"source": ["k8s_admission", "terraform"], "decision": ["ALLOW", "REQUIRE_APPROVAL", "DENY"],
           "failure_type": ["timeout", "lock_timeout"], "event": ["contended", "timeout"],
           "required_permission": ["approve:prod", "approve:nonprod"], "target_kind": ["slack", "webhook"],
           "outcome": ["delivered", "retry"], "artifact": ["archive", "parity"], "job": ["approvals.expire"],
           "status": ["success", "failure"], "route": ["/api/v1/enforcement/gate/k8s/admission/review"],
           "tenant": ["acme", "acme", "globex", "initech"], "scope": ["payments", "search", "ml", "web"]}


def _legends(target: dict[str, Any]) -> list[str]:
    fmt = target.get("legendFormat") or ""
    names = re.findall(r"\{\{(\w+)\}\}", fmt)
    if not names:
        return [fmt or "value"]
    # Label values differ per metric family for a few shared label names.
    samples = dict(SAMPLES)
    if "route" in names:
        samples["status"] = ["200", "429"]
    if "artifact" in names:
        samples["outcome"] = ["success", "error"]
    count = max(len(samples.get(n, ["x"])) for n in names)

    def value(name: str, i: int) -> str:
        options = samples.get(name, ["x"])
        return options[i % len(options)]

    return [re.sub(r"\{\{(\w+)\}\}", lambda m, i=i: value(m.group(1), i), fmt) for i in range(min(count, 3))]


def _series(seed: int, points: int = 60) -> list[float]:
    return [max(0.0, 1 + 0.6 * math.sin((i + seed * 7) / 6) + 0.3 * math.sin((i * 3 + seed) / 4))
            for i in range(points)]


def _timeseries(panel: dict[str, Any], width: int, height: int) -> str:
    lines, legend, seed = [], [], 0
    for target in panel["targets"]:
        for label in _legends(target):
            values = _series(seed)
            top = max(values) * 1.2
            pts = " ".join(f"{i * width / (len(values) - 1):.1f},{height - v / top * height:.1f}"
                           for i, v in enumerate(values))
            colour = COLOURS[seed % len(COLOURS)]
            lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{pts}"/>')
            legend.append(f'<span><i style="background:{colour}"></i>{html.escape(label)}</span>')
            seed += 1
    grid = "".join(f'<line x1="0" x2="{width}" y1="{y}" y2="{y}" stroke="#2c3235"/>'
                   for y in range(0, height, max(1, height // 4)))
    return (f'<svg width="{width}" height="{height}">{grid}{"".join(lines)}</svg>'
            f'<div class="legend">{"".join(legend)}</div>')


def _bargauge(panel: dict[str, Any]) -> str:
    rows = []
    for i, label in enumerate(["acme/payments", "acme/search", "globex/ml", "initech/web"]):
        ratio = [0.93, 0.71, 0.44, 0.18][i]
        colour = "#f2495c" if ratio >= 0.9 else "#ff9830" if ratio >= 0.75 else "#73bf69"
        rows.append(f'<div class="bar"><span>{label}</span><b style="width:{ratio * 70:.0f}%;background:{colour}">'
                    f'</b><em>{ratio * 100:.0f}%</em></div>')
    return "".join(rows)


def _table(panel: dict[str, Any]) -> str:
    heads = [t.get("legendFormat") or "value" for t in panel["targets"]]
    if panel["title"] == "Build":
        return ("<table><tr><th>component</th><th>version</th><th>python_version</th></tr>"
                "<tr><td>api</td><td>0.1.0</td><td>3.12.8</td></tr><tr><td>worker</td><td>0.1.0</td>"
                "<td>3.12.8</td></tr></table>")
    rows = [["acme", "payments", "1000", "930", "412.50", "0"], ["acme", "search", "800", "568", "120.00", "0"],
            ["globex", "ml", "5000", "2200", "1980.75", "0"]]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["tenant", "scope", *heads])
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def page(dashboard: dict[str, Any]) -> str:
    col, row = 60, 34  # pixels per grid column / row
    parts = []
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        left, top, width, height = g["x"] * col, g["y"] * row, g["w"] * col - 8, g["h"] * row - 8
        style = f"left:{left}px;top:{top}px;width:{width}px;height:{height}px"
        if panel["type"] == "row":
            parts.append(f'<div class="row" style="{style}">{html.escape(panel["title"])}</div>')
            continue
        unit = UNIT.get(panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short"), "")
        if panel["type"] == "timeseries":
            body = _timeseries(panel, width - 24, height - 90)
        else:
            body = {"bargauge": _bargauge, "table": _table}[panel["type"]](panel)
        parts.append(f'<div class="panel" style="{style}"><h3>{html.escape(panel["title"])}'
                     f'<small>{html.escape(unit.strip())}</small></h3>{body}</div>')
    total = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"]) * row
    return f"""<!doctype html><html><head><meta charset="utf-8"><style>
body{{margin:0;background:#111217;color:#ccccdc;font:13px Inter,Helvetica,Arial,sans-serif}}
header{{padding:10px 16px;border-bottom:1px solid #2c3235;display:flex;justify-content:space-between}}
header b{{font-size:16px;color:#fff}} main{{position:relative;margin:12px;height:{total}px}}
.panel{{position:absolute;background:#181b1f;border:1px solid #2c3235;border-radius:3px;padding:8px 12px;box-sizing:border-box;overflow:hidden}}
.row{{position:absolute;font-weight:600;color:#fff;font-size:14px;padding-top:6px}}
h3{{margin:0 0 6px;font-size:13px;color:#fff;font-weight:500}} small{{color:#8e8e8e;margin-left:6px}}
.legend span{{margin-right:12px;white-space:nowrap;font-size:11px}} .legend i{{display:inline-block;width:12px;height:3px;margin-right:4px;vertical-align:middle}}
.bar{{display:flex;align-items:center;margin:6px 0}} .bar span{{width:25%;font-size:12px}} .bar b{{height:18px;border-radius:2px}} .bar em{{margin-left:8px;font-style:normal}}
table{{border-collapse:collapse;width:100%;font-size:12px}} th,td{{text-align:left;padding:3px 6px;border-bottom:1px solid #2c3235}} th{{color:#33a2e5}}
</style></head><body><header><b>{html.escape(dashboard["title"])}</b>
<span>namespace: valdrix &nbsp;·&nbsp; last 6 hours &nbsp;·&nbsp; preview rendered from {DASHBOARD.name} with synthetic data</span>
</header><main>{"".join(parts)}</main></body></html>"""


def main() -> None:
    from playwright.sync_api import sync_playwright

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "dashboard.png")
    dashboard = json.loads(DASHBOARD.read_text())
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 24 * 60 + 24, "height": 900})
        tab.set_content(page(dashboard))
        tab.screenshot(path=str(out), full_page=True)
        browser.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

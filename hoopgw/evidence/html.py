"""
The evidence document (L{hoopgw.evidence.controls.build_evidence}) as one
self-contained HTML file: a table of the controls, a timeline of actions by
outcome (inline SVG, drawn here), and a section per control with its summary
and its findings, each finding with the records it cites (seq and SHA-256).

Self-contained: inline CSS, no script, no external resource of any kind,
and a Content-Security-Policy that forbids fetching one, so the file reads
the same offline, in an archive, years later.  Every value from the trail
(SQL text, user names, paths, errors) is escaped: the trail is written by
the people the report is about.

The same document gives the same bytes; only C{generated_at} differs
between two runs over the same range.
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from typing import Any

from hoopgw.errors import bidi_safe
from hoopgw.evidence.controls import DEFICIENCIES, OUTCOMES

__all__ = ["render_html"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2125;margin:0;background:#f6f7f9}
main{max-width:1200px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:0 0 8px}h3{font-size:15px;margin:16px 0 6px}
section{background:#fff;border:1px solid #d8dde3;border-radius:6px;padding:16px;margin:16px 0}
table{border-collapse:collapse;width:100%;margin:4px 0}
th,td{border:1px solid #e1e5ea;padding:4px 8px;text-align:left;vertical-align:top}
th{white-space:nowrap}
.long{word-break:break-all}
th{background:#f0f2f5;font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums}
table.kv>tbody>tr>th{width:14em}
code,.mono{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;overflow-wrap:break-word}
.meta{color:#56606b}
.ok{color:#17663a;font-weight:600}.bad{color:#b3261e;font-weight:600}.review{color:#8a5a00;font-weight:600}
.empty{color:#8a939d;font-style:italic}
.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:-1px}
svg text{font:11px system-ui,sans-serif;fill:#56606b}
"""

_COLORS = {"succeeded": "#2e7d32", "failed": "#e65100", "blocked": "#c62828", "expired": "#6a1b9a", "other": "#78909c"}


def _e(value: Any) -> str:
    return escape(bidi_safe(value), quote=True)  # (a statement shown reordered would not read as what ran)


def _text(value: Any) -> str:
    """Escaped; a long unbroken token (a hash, a path) may break anywhere rather than widen its table."""
    text = _e(value)
    return f'<span class="long">{text}</span>' if any(len(word) > 32 for word in str(value).split()) else text


def _status(name: str, findings: int) -> tuple[str, str]:
    if not findings:
        return "ok", "satisfied"
    if name in DEFICIENCIES:
        return "bad", "not satisfied"
    return "review", "satisfied; findings for review"


def _cite(record: dict[str, Any]) -> str:
    # The full hash stays in the text (copyable, checkable with sha256sum); no link, nothing to fetch.
    return f'<span class="mono long">#{_e(record["seq"])} {_e(record["sha256"])}</span>'


def _is_citation(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"seq", "sha256"}


def _value(value: Any) -> str:
    """Any summary value as HTML: dicts as key/value tables, lists of dicts as tables."""
    if value is None or value == "" or value == [] or value == {}:
        return '<span class="empty">none</span>'
    if isinstance(value, bool):
        return "yes" if value else "no"
    if _is_citation(value):
        return _cite(value)
    if isinstance(value, dict):
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{_value(v)}</td></tr>" for k, v in value.items())
        return f'<table class="kv"><tbody>{rows}</tbody></table>'
    if isinstance(value, list):
        if all(_is_citation(v) for v in value):
            return "<br>".join(_cite(v) for v in value)
        if all(isinstance(v, dict) for v in value):
            columns: list[str] = []
            for item in value:
                columns += [k for k in item if k not in columns]
            head = "".join(f"<th>{_e(c)}</th>" for c in columns)
            body = "".join("<tr>" + "".join(f"<td>{_value(item.get(c))}</td>" for c in columns) + "</tr>"
                           for item in value)
            return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        return ", ".join(_value(v) for v in value)
    if isinstance(value, int | float):
        return _e(f"{value:,}" if isinstance(value, int) else value)
    return _text(value)


def _findings(findings: list[dict[str, Any]]) -> str:
    if not findings:
        return '<p class="empty">No findings.</p>'
    columns = ("kind", "time", "subject", "connection", "session", "detail")
    head = "".join(f"<th>{c}</th>" for c in (*columns, "records"))
    rows = []
    for finding in findings:
        cells = "".join(f'<td{" class=mono" if c == "detail" else ""}>{_text(finding.get(c) or "")}</td>' for c in columns)
        records = "<br>".join(_cite(r) for r in finding.get("records", [])) or '<span class="empty">none</span>'
        rows.append(f"<tr>{cells}<td>{records}</td></tr>")
    return f'<table class="findings"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _seconds(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def _label(seconds: int, width: int) -> str:
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    if width >= 86400:
        return moment.strftime("%Y-%m-%d")
    return moment.strftime("%Y-%m-%d %H:%M" + (":%S" if width < 60 else "")) + " UTC"


def _chart(timeline: dict[str, Any]) -> str:
    """Stacked bars of action ends per bucket and outcome, as inline SVG (no script)."""
    buckets = timeline.get("buckets", [])
    if not buckets:
        return '<p class="empty">No actions ended in the range.</p>'
    width = timeline["bucket_seconds"]
    first = _seconds(buckets[0]["start"])
    slots = (_seconds(buckets[-1]["start"]) - first) // width + 1
    statuses = [s for s in OUTCOMES if s in timeline["outcomes"]] + sorted(
        s for s in timeline["outcomes"] if s not in OUTCOMES)
    peak = max(sum(b["counts"].values()) for b in buckets)
    left, top, plot_h = 48, 10, 180
    # A few buckets stay bars, not slabs across the whole plot; the plot is as wide as they need.
    bar = min(880 / slots, 40)
    plot_w = max(slots * bar, 320)
    svg_w, svg_h = f"{left + plot_w + 10:.0f}", top + plot_h + 40
    parts = [
        # Inline SVG in HTML needs no xmlns: the file names no URL at all.
        f'<svg role="img" width="{svg_w}" height="{svg_h}" viewBox="0 0 {svg_w} {svg_h}" '
        f'aria-label="actions per {_e(_duration(width))} by outcome">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w:.2f}" y2="{top + plot_h}" stroke="#9aa3ad"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#9aa3ad"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{peak:,}</text>',
        f'<text x="{left - 6}" y="{top + plot_h + 4}" text-anchor="end">0</text>',
    ]
    for bucket in buckets:
        start = _seconds(bucket["start"])
        x = left + (start - first) // width * bar
        y = float(top + plot_h)
        for status in statuses:
            n = bucket["counts"].get(status, 0)
            if not n:
                continue
            h = plot_h * n / peak
            y -= h
            parts.append(
                f'<rect x="{x + bar * 0.1:.2f}" y="{y:.2f}" width="{max(bar * 0.8, 1):.2f}" height="{h:.2f}" '
                f'fill="{_COLORS.get(status, _COLORS["other"])}">'
                f'<title>{_e(_label(start, width))}: {n:,} {_e(status)}</title></rect>')
    parts.append(f'<text x="{left}" y="{top + plot_h + 16}">{_e(_label(first, width))}</text>')
    if slots > 1:
        parts.append(f'<text x="{left + plot_w:.2f}" y="{top + plot_h + 16}" text-anchor="end">'
                     f'{_e(_label(first + (slots - 1) * width, width))}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.2f}" y="{top + plot_h + 34}" text-anchor="middle">'
                 f'one bar per {_e(_duration(width))}</text></svg>')
    legend = "".join(f'<span><i style="background:{_COLORS.get(s, _COLORS["other"])}"></i>{_e(s)} '
                     f'({timeline["outcomes"][s]:,})</span>' for s in statuses)
    return f'<div class="legend">{legend}</div>{"".join(parts)}'


def _duration(seconds: int) -> str:
    for unit, size in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}s" if n > 1 else unit
    return f"{seconds} seconds" if seconds > 1 else "second"


def render_html(document: dict[str, Any]) -> bytes:
    """The report, as UTF-8 HTML bytes."""
    controls = document["controls"]
    span = document["range"]
    trail = document.get("trail", {})
    title = "hoopgw evidence per NIST SP 800-53 control"
    meta = {
        "range": f"{span['since'] or 'the first record'} to {span['until'] or 'the last record'}"
                 + (f", connection {span['connection']} only" if span["connection"] else ""),
        "records": f"{trail.get('records', 0):,} ({trail.get('first') or '-'} to {trail.get('last') or '-'})",
        "audit directory": document["audit_dir"],
        "generated at": document["generated_at"],
    }
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # Nothing may be fetched: no script, no image, no font, no style sheet from anywhere.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{_e(title)}</h1>",
        '<table class="kv meta"><tbody>'
        + "".join(f"<tr><th>{_e(k)}</th><td>{_text(v)}</td></tr>" for k, v in meta.items())
        + "</tbody></table>",
        '<section id="controls"><h2>Controls</h2><table><thead><tr><th>control</th><th>title</th>'
        "<th>findings</th><th>status</th></tr></thead><tbody>",
    ]
    for name, section in controls.items():
        css, status = _status(name, len(section["findings"]))
        out.append(f'<tr><td><a href="#{_e(name.lower())}">{_e(name)}</a></td><td>{_e(section["title"])}</td>'
                   f'<td class="n">{len(section["findings"]):,}</td><td class="{css}">{_e(status)}</td></tr>')
    out.append("</tbody></table></section>")
    out.append('<section id="timeline"><h2>Actions by outcome</h2>'
               + _chart(document.get("timeline", {})) + "</section>")
    for name, section in controls.items():
        css, status = _status(name, len(section["findings"]))
        out.append(
            f'<section class="control" id="{_e(name.lower())}"><h2>{_e(name)} {_e(section["title"])}</h2>'
            f'<p class="{css}">{_e(status)}</p><h3>Summary</h3>{_value(section["summary"])}'
            f'<h3>Findings ({len(section["findings"]):,})</h3>{_findings(section["findings"])}</section>')
    out.append('<p class="meta">Each record is cited as #seq and the SHA-256 of its line in records.jsonl '
               "(line seq + 1, without its newline: <code>sed -n 8p records.jsonl | tr -d '\\n' | sha256sum</code> "
               "for #7).</p>")
    out.append("</main></body></html>")
    return ("\n".join(out) + "\n").encode()

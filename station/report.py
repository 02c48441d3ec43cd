"""Batch results as files: CSV (the columns of ``station-cli inspect --csv``) and one HTML report.

Qt-free. The HTML report is a single self-contained file: inline style, heatmap thumbnails embedded
as base64 PNG, a summary of the counts, one row per file; every text is escaped. Both files are
written atomically (temporary file + rename), so a crash never leaves half a report.
"""
from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import io
import os
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from core.atomic import write_bytes_atomic
from station.wording import ALL_MODELS, model_label, reasons_in_words

CSV_COLUMNS = ["path", "verdict", "patchcore", "gaussian", "classifier", "fused", "reasons",
               "latency_ms", "heatmap", "error"]


@dataclass(frozen=True)
class ResultRow:
    """One inspected file, small enough to keep thousands of (no full images, no maps)."""

    index: int
    path: str
    verdict: str = ""  # PASS / FAIL / REVIEW, "" when the file could not be inspected
    scores: Mapping[str, float] = field(default_factory=dict)  # normalised, 1.0 = limit
    states: Mapping[str, str] = field(default_factory=dict)
    bands: Mapping[str, float] = field(default_factory=dict)  # normalised band low, per model
    fused: float | None = None
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    latency_ms: float | None = None
    heatmap: str = ""  # saved heatmap overlay, "" when none was kept
    image_path: str = ""  # where the image can be seen again: the kept copy, else the file itself
    error: str = ""
    error_code: str = ""
    thumbnail: bytes | None = None  # small PNG: the part with its heatmap
    inspection_id: int | None = None
    recipe: str = ""
    recipe_version: int = 0

    def score_states(self) -> dict:
        """Per model: score, state and PASS limit, in the stored shape (what the wording reads)."""
        return {m: {"score": s, "state": self.states.get(m, ""), "band": [self.bands.get(m), None]}
                for m, s in self.scores.items()}

    def record(self) -> dict:
        """As a store-like record (what PartViewer shows)."""
        return {
            "id": self.inspection_id if self.inspection_id is not None else f"batch-{self.index}",
            "source": self.path, "recipe": self.recipe, "recipe_version": self.recipe_version,
            "decision": self.verdict or None, "reasons": list(self.reasons), "notes": list(self.notes),
            "scores": self.score_states(),
            "fused": self.fused, "image_path": self.image_path, "heatmap_path": self.heatmap,
            "latency_ms": self.latency_ms, "error": self.error or None,
        }


def csv_row(r: ResultRow) -> list[str]:
    if r.error:
        return [r.path, "", "", "", "", "", "", "", "", r.error]
    return [r.path, r.verdict,
            *[f"{r.scores[m]:.4f}" if m in r.scores else "" for m in ALL_MODELS],
            f"{r.fused:.4f}" if r.fused is not None else "", ";".join(r.reasons),
            f"{r.latency_ms:.1f}" if r.latency_ms is not None else "", r.heatmap, ""]


def write_csv(path: str | os.PathLike, rows: Iterable[ResultRow]) -> int:
    """Write the CSV; returns the number of data rows."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    n = 0
    for r in rows:
        w.writerow(csv_row(r))
        n += 1
    write_bytes_atomic(path, buf.getvalue().encode("utf-8"))
    return n


def summary_counts(rows: Iterable[ResultRow]) -> dict[str, int]:
    counts = {"files": 0, "PASS": 0, "FAIL": 0, "REVIEW": 0, "errors": 0}
    for r in rows:
        counts["files"] += 1
        counts["errors" if r.error else r.verdict] = counts.get("errors" if r.error else r.verdict, 0) + 1
    return counts


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
h1 { margin-bottom: 4px; } .meta { color: #555; margin-bottom: 16px; }
.summary td { font-size: 20px; padding: 6px 18px; text-align: center; }
table.rows { border-collapse: collapse; width: 100%; font-size: 14px; }
table.rows th, table.rows td { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left;
  vertical-align: middle; }
table.rows th { background: #f0f0f0; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.PASS { color: #1f7a33; font-weight: bold; } .FAIL { color: #b3261e; font-weight: bold; }
.REVIEW { color: #a66300; font-weight: bold; } .ERROR { color: #666; font-weight: bold; }
img { display: block; width: 64px; height: auto; image-rendering: auto; }
.path { word-break: break-all; }
"""


def html_report(rows: list[ResultRow], *, title: str = "Batch inspection", recipe: str = "",
                folder: str = "", created: _dt.datetime | None = None) -> str:
    e = html.escape
    created = created or _dt.datetime.now()
    counts = summary_counts(rows)
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>",
           f"<h1>{e(title)}</h1>",
           '<div class="meta">' + " · ".join(e(x) for x in (
               f"recipe {recipe}" if recipe else "", f"folder {folder}" if folder else "",
               created.strftime("%Y-%m-%d %H:%M")) if x) + "</div>",
           '<table class="summary"><tr>']
    for key, label in (("files", "files"), ("PASS", "PASS"), ("FAIL", "FAIL"), ("REVIEW", "REVIEW"),
                       ("errors", "not inspected")):
        cls = {"errors": "ERROR"}.get(key, key if key != "files" else "")
        out.append(f'<td><span class="{cls}">{counts.get(key, 0)}</span><br>{e(label)}</td>')
    out.append("</tr></table>")
    out.append('<table class="rows"><thead><tr><th>#</th><th>heatmap</th><th>file</th><th>verdict</th>'
               + "".join(f"<th>{e(model_label(m))}</th>" for m in ALL_MODELS)
               + "<th>fused</th><th>reasons</th><th>latency ms</th><th>error</th></tr></thead><tbody>")
    for r in rows:
        img = (f'<img alt="heatmap" src="data:image/png;base64,{base64.b64encode(r.thumbnail).decode("ascii")}">'
               if r.thumbnail else "")
        css, verdict = (r.verdict, r.verdict) if r.verdict else ("ERROR", "NOT INSPECTED")
        cells = [f'<td class="num">{r.index + 1}</td>', f"<td>{img}</td>",
                 f'<td class="path">{e(r.path)}</td>', f'<td class="{e(css)}">{e(verdict)}</td>']
        cells += [f'<td class="num">{r.scores[m]:.3f}</td>' if m in r.scores else "<td></td>" for m in ALL_MODELS]
        cells.append(f'<td class="num">{r.fused:.3f}</td>' if r.fused is not None else "<td></td>")
        cells.append(f"<td>{e(' '.join(reasons_in_words(r.reasons, r.notes, r.score_states())))}</td>")
        cells.append(f'<td class="num">{r.latency_ms:.1f}</td>' if r.latency_ms is not None else "<td></td>")
        cells.append(f"<td>{e(r.error)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></body></html>")
    return "\n".join(out)


def write_html(path: str | os.PathLike, rows: Iterable[ResultRow], **kw) -> int:
    rows = list(rows)
    write_bytes_atomic(path, html_report(rows, **kw).encode("utf-8"))
    return len(rows)

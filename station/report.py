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
from dataclasses import dataclass
from typing import Iterable

from core.atomic import write_bytes_atomic
from core.store import StoredInspection, printable
from station.wording import ALL_MODELS, model_label, record_in_words

CSV_COLUMNS = ["path", "verdict", "patchcore", "gaussian", "classifier", "fused", "reasons",
               "latency_ms", "heatmap", "error"]


@dataclass(frozen=True)
class ResultRow:
    """One inspected file of a batch: its stored record plus a small thumbnail (no images, no maps)."""

    index: int
    record: StoredInspection
    thumbnail: bytes | None = None  # small PNG: the part with its heatmap
    error_code: str = ""  # why a file could not be inspected (core.images codes), "" when it was
    shown_as: str = ""  # the path as the table shows it: relative to the folder the batch read
    already: bool = False  # judged before by the same recipe version: the stored verdict, not recorded again

    @property
    def path(self) -> str:
        return self.record.source

    @property
    def verdict(self) -> str:
        return self.record.verdict

    @property
    def scores(self) -> dict[str, float]:
        """Per model, normalised: 1.0 is that model's FAIL limit."""
        return {m: s.score for m, s in self.record.scores.items()}

    @property
    def fused(self) -> float | None:
        return self.record.fused

    @property
    def reasons(self) -> tuple[str, ...]:
        return self.record.reasons

    @property
    def latency_ms(self) -> float | None:
        return self.record.latency_ms

    @property
    def heatmap(self) -> str:
        return self.record.heatmap_path or ""

    @property
    def image_path(self) -> str:
        """Where the image can be seen again: the kept copy, else the file itself."""
        return self.record.image_path or self.record.source

    @property
    def error(self) -> str:
        return self.record.error or ""

    @property
    def inspection_id(self) -> int | None:
        return self.record.id


def cell(text: str) -> str:
    """A CSV cell a spreadsheet shows as text: valid UTF-8 (``core.store.printable``), and a leading
    ``=``, ``+``, ``-``, ``@`` (a formula to Excel or LibreOffice) quoted with an apostrophe."""
    text = printable(text)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def csv_row(r: StoredInspection) -> list[str]:
    """One CSV line of ``CSV_COLUMNS``: the batch export and ``station-cli inspect --csv`` alike."""
    if r.error:
        return [cell(r.source), "", "", "", "", "", "", "", "", cell(r.error)]
    return [cell(r.source), r.verdict,
            *[f"{r.scores[m].score:.4f}" if m in r.scores else "" for m in ALL_MODELS],
            f"{r.fused:.4f}" if r.fused is not None else "", ";".join(r.reasons),
            f"{r.latency_ms:.1f}" if r.latency_ms is not None else "", cell(r.heatmap_path or ""), ""]


def write_csv(path: str | os.PathLike, rows: Iterable[ResultRow | StoredInspection]) -> int:
    """Write the CSV atomically; returns the number of data rows."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    n = 0
    for r in rows:
        w.writerow(csv_row(r.record if isinstance(r, ResultRow) else r))
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
    def e(text: str) -> str:  # escaped, and valid UTF-8 whatever the file names hold
        return html.escape(printable(str(text)))
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
        cells.append(f"<td>{e(' '.join(record_in_words(r.record)))}</td>")
        cells.append(f'<td class="num">{r.latency_ms:.1f}</td>' if r.latency_ms is not None else "<td></td>")
        cells.append(f"<td>{e(r.error)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></body></html>")
    return "\n".join(out)


def write_html(path: str | os.PathLike, rows: Iterable[ResultRow], **kw) -> int:
    rows = list(rows)
    write_bytes_atomic(path, html_report(rows, **kw).encode("utf-8"))
    return len(rows)

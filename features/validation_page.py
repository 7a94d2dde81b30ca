"""A self-contained HTML page per validated batch, and an index of them.

Great Expectations' Data Docs load their styles and table scripts from CDNs (jQuery,
Bootstrap, bootstrap-table, Vega); on a machine without internet their index renders
blank. These pages carry their style inline and need no script, so they render offline,
in the MLflow artifact viewer and in a mail client alike.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

SUMMARY_DIR = "summaries"
INDEX_JSON = "index.json"
INDEX_HTML = "index.html"
_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5rem;color:#1f2328}
h1{font-size:1.3rem}table{border-collapse:collapse;margin:.8rem 0}
th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}.fail{color:#b42318;font-weight:600}.pass{color:#1a7f37}
.note{color:#57606a}
"""


class CheckOutcome(BaseModel):
    """One expectation's outcome on one batch."""

    model_config = ConfigDict(frozen=True)

    expectation: str = Field(description="GX expectation type.")
    column: str | None = Field(description="Dataset column the check is about.")
    problem: str = Field(description="What a failing row has, in words.")
    success: bool
    unexpected_count: int = Field(default=0, description="Offending rows.")


class PageEntry(BaseModel):
    """One batch's line in the index."""

    model_config = ConfigDict(frozen=True)

    at: str = Field(description="UTC time of the validation, ISO 8601.")
    batch: str
    suite: str
    n_rows: int
    success: bool
    n_failed: int
    page: str = Field(description="The batch's page, relative to the index.")


def _safe_name(batch: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in batch) or "batch"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _page(title: str, body: list[str]) -> str:
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
            *body,
            "</body></html>",
        ]
    )


def render_batch_page(
    batch: str, suite: str, at: str, n_rows: int, checks: list[CheckOutcome]
) -> str:
    """The HTML page of one validated batch: verdict first, failing checks first."""
    failed = [c for c in checks if not c.success]
    verdict = (
        f'<p class="fail">FAILED: {len(failed)} of {len(checks)} checks</p>'
        if failed
        else f'<p class="pass">Passed: all {len(checks)} checks</p>'
    )
    rows = [
        f"<tr><td>{html.escape(c.column or '-')}</td><td>{html.escape(c.expectation)}</td>"
        f"<td>{html.escape(c.problem)}</td>"
        f'<td class="{"pass" if c.success else "fail"}">{"pass" if c.success else "FAIL"}</td>'
        f"<td>{c.unexpected_count}</td></tr>"
        for c in sorted(checks, key=lambda c: c.success)
    ]
    return _page(
        f"Data quality: {batch}",
        [
            f"<h1>Data quality: {html.escape(batch)}</h1>",
            f'<p class="note">Suite <code>{html.escape(suite)}</code>, {n_rows} rows, '
            f"validated {html.escape(at)} UTC.</p>",
            verdict,
            "<table><thead><tr><th>column</th><th>expectation</th><th>a failing row</th>"
            "<th>result</th><th>offending rows</th></tr></thead><tbody>",
            *rows,
            "</tbody></table>",
            '<p class="note"><a href="index.html">All validated batches</a></p>',
        ],
    )


def render_index(entries: list[PageEntry]) -> str:
    """The index of every validated batch, newest first."""
    rows = [
        f'<tr><td>{html.escape(e.at)}</td><td><a href="{html.escape(e.page)}">'
        f"{html.escape(e.batch)}</a></td><td>{html.escape(e.suite)}</td><td>{e.n_rows}</td>"
        f'<td class="{"pass" if e.success else "fail"}">'
        f"{'passed' if e.success else f'FAILED ({e.n_failed})'}</td></tr>"
        # Newest first; a batch validated in the same second as another is the newer one
        # when it was written later (entries are kept in the order they were written).
        for _, e in sorted(enumerate(entries), key=lambda p: (p[1].at, p[0]), reverse=True)
    ]
    return _page(
        "Data quality: validated batches",
        [
            "<h1>Data quality: validated batches</h1>",
            f'<p class="note">{len(entries)} validations, newest first.</p>',
            "<table><thead><tr><th>when (UTC)</th><th>batch</th><th>suite</th><th>rows</th>"
            "<th>result</th></tr></thead><tbody>",
            *rows,
            "</tbody></table>",
        ],
    )


def write_batch_page(
    root: Path, batch: str, suite: str, at: str, n_rows: int, checks: list[CheckOutcome]
) -> Path:
    """Write ``root/summaries/<batch>.html`` and add it to ``root/summaries/index.html``.

    Returns:
        The batch page's path.
    """
    directory = Path(root) / SUMMARY_DIR
    page = directory / f"{_safe_name(batch)}.html"
    _write_atomic(page, render_batch_page(batch, suite, at, n_rows, checks))
    index = directory / INDEX_JSON
    entries = (
        [PageEntry.model_validate(e) for e in json.loads(index.read_text(encoding="utf-8"))]
        if index.is_file()
        else []
    )
    entry = PageEntry(
        at=at,
        batch=batch,
        suite=suite,
        n_rows=n_rows,
        success=all(c.success for c in checks),
        n_failed=sum(not c.success for c in checks),
        page=page.name,
    )
    entries = [e for e in entries if e.page != entry.page] + [entry]
    _write_atomic(index, json.dumps([e.model_dump() for e in entries], indent=1))
    _write_atomic(directory / INDEX_HTML, render_index(entries))
    return page

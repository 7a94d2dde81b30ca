"""Drift you can see, rendered: brief lines for the email and a page for the report.

``monitoring.explain`` finds the rows, clusters and columns that drive a window's drift;
here they become

* :func:`explanation_lines`: a few scrubbed lines for the alert email (the most
  over-represented region of each drifted embedding with example snippets, the tabular
  columns with the largest effect and both medians or shares);
* :func:`write_explanation_page`: ``drift_examples.html``, a self-contained page (tables,
  scrubbed text snippets, an inline thumbnail grid of the image rows) logged beside the
  Evidently report.

Examples are looked up by entity in the raw rows the caller passes (``RawExamples``):
the prediction log keeps embeddings, not text or pixels. Without them the rows are shown
by entity id.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from features.state_io import atomic_write_text
from monitoring.alerts.pii import one_line, scrub_pii
from monitoring.explain import (
    ClusterShift,
    DriftExplanation,
    EmbeddingExplanation,
    RowScore,
    render_image_grid,
)

EXPLANATION_PAGE = "drift_examples.html"
_SNIPPET_CHARS = 160


class RawExamples(BaseModel):
    """Raw content of the rows an explanation points at, by entity id (as text)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    texts: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="Entity -> text column -> the raw text."
    )
    images: dict[str, dict[str, np.ndarray]] = Field(
        default_factory=dict, description="Entity -> image column -> decoded RGB pixels."
    )


def _source_column(explanation: EmbeddingExplanation) -> str:
    return explanation.column.removesuffix("_emb")


def _snippet(row: RowScore, column: str, raw: RawExamples | None) -> str:
    text = (raw.texts.get(row.entity or "", {}) if raw else {}).get(column)
    if text:
        return f'"{one_line(scrub_pii(text), _SNIPPET_CHARS)}"'
    return f"entity {scrub_pii(row.entity or f'row {row.row}')}"


def _lead_cluster(explanation: EmbeddingExplanation) -> ClusterShift | None:
    if not explanation.clusters:
        return None
    lead = explanation.clusters[0]
    return lead if lead.window_share - lead.reference_share > 0.05 else None


def _lift(cluster: ClusterShift) -> str:
    return "new in this window" if math.isinf(cluster.lift) else f"{cluster.lift:.1f}x"


def explanation_lines(
    explanation: DriftExplanation, raw: RawExamples | None = None, max_tabular: int = 3
) -> list[str]:
    """A few lines saying what drives the drift (scrubbed; for the email)."""
    lines = []
    for explanation_ in explanation.embeddings.values():
        column = _source_column(explanation_)
        lead = _lead_cluster(explanation_)
        if lead is None:
            lines.append(f"{column}: no region of the space is clearly over-represented")
            continue
        examples = "; ".join(
            _snippet(r, column, raw) for r in lead.examples[:2] if explanation_.kind == "text"
        )
        if explanation_.kind == "image":
            examples = ", ".join(scrub_pii(r.entity or f"row {r.row}") for r in lead.examples[:3])
            examples = f"entities {examples} (thumbnails in the report's drift examples)"
        lines.append(
            f"{column} ({explanation_.kind}): a region holding {lead.window_share:.0%} of the "
            f"window but {lead.reference_share:.0%} of the reference ({_lift(lead)}); "
            f"e.g. {examples}"
        )
    for effect in [e for e in explanation.tabular if e.effect >= 0.1][:max_tabular]:
        benign = " (monitor-only column)" if effect.benign else ""
        if effect.kind == "numeric":
            lines.append(
                f"{scrub_pii(effect.column)}{benign}: median {effect.reference['p50']:.3g} -> "
                f"{effect.window['p50']:.3g}, p10-p90 {effect.reference['p10']:.3g}-"
                f"{effect.reference['p90']:.3g} -> {effect.window['p10']:.3g}-"
                f"{effect.window['p90']:.3g} (KS distance {effect.effect:.2f})"
            )
        else:
            moved = sorted(
                set(effect.reference) | set(effect.window),
                key=lambda c: -abs(effect.window.get(c, 0.0) - effect.reference.get(c, 0.0)),
            )[:2]
            shares = ", ".join(
                f"{scrub_pii(c)} {effect.reference.get(c, 0.0):.0%} -> {effect.window.get(c, 0.0):.0%}"
                for c in moved
            )
            lines.append(
                f"{scrub_pii(effect.column)}{benign}: {shares} "
                f"(total-variation distance {effect.effect:.2f})"
            )
    return lines


def _image_grid_html(
    explanation: EmbeddingExplanation, raw: RawExamples | None, out_dir: Path
) -> str:
    column = _source_column(explanation)
    rows = [r for r in explanation.top_rows if raw and column in raw.images.get(r.entity or "", {})]
    if not rows or raw is None:
        return "<p>No thumbnails: the raw images of these rows were not available.</p>"
    png = render_image_grid(
        [raw.images[r.entity or ""][column] for r in rows],
        out_dir / f"drift_examples_{column}.png",
        captions=[scrub_pii(r.entity or "")[:12] for r in rows],
    )
    encoded = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<img alt="window rows that drive the {html.escape(column)} drift" src="data:image/png;base64,{encoded}">'


def write_explanation_page(
    explanation: DriftExplanation, out_dir: str | Path, raw: RawExamples | None = None
) -> Path:
    """Write ``drift_examples.html`` (self-contained; everything escaped and scrubbed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    e = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>What drives the drift</title>",
        "<style>body{font-family:sans-serif;max-width:70em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}</style></head><body>",
        "<h1>What drives the drift</h1>",
        "<ul>",
        *(f"<li>{e(line)}</li>" for line in explanation_lines(explanation, raw)),
        "</ul>",
    ]
    for item in explanation.embeddings.values():
        column = _source_column(item)
        parts.append(f"<h2>{e(column)} ({e(item.kind)})</h2>")
        parts.append(
            "<p>Regions of the embedding space (k-means on the drift test's PCA "
            "components), most over-represented in the window first.</p>"
        )
        parts.append(
            "<table><tr><th>region</th><th>share of window</th><th>share of reference</th>"
            "<th>lift</th><th>examples</th></tr>"
        )
        for cluster in item.clusters:
            examples = "<br>".join(e(_snippet(r, column, raw)) for r in cluster.examples)
            parts.append(
                f"<tr><td>{cluster.cluster}</td><td>{cluster.window_share:.1%}</td>"
                f"<td>{cluster.reference_share:.1%}</td><td>{e(_lift(cluster))}</td>"
                f"<td>{examples}</td></tr>"
            )
        parts.append("</table>")
        parts.append(
            "<h3>Rows that drive the drift most (MMD witness score: higher = where the "
            "window has mass the reference lacks)</h3><ol>"
        )
        parts.extend(
            f"<li>{e(_snippet(r, column, raw))} (witness {r.score:.3g})</li>" for r in item.top_rows
        )
        parts.append("</ol>")
        if item.kind == "image":
            parts.append(_image_grid_html(item, raw, out_dir))
    if explanation.tabular:
        parts.append("<h2>Tabular columns, largest effect first</h2><table>")
        parts.append("<tr><th>column</th><th>effect</th><th>reference</th><th>window</th></tr>")
        for effect in explanation.tabular:

            def fmt(values: dict[str, float]) -> str:
                return ", ".join(f"{scrub_pii(k)} {v:.3g}" for k, v in values.items())

            parts.append(
                f"<tr><td>{e(scrub_pii(effect.column))}{' (monitor-only)' if effect.benign else ''}"
                f"</td><td>{effect.effect:.3f}</td><td>{e(fmt(effect.reference))}</td>"
                f"<td>{e(fmt(effect.window))}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return atomic_write_text(out_dir / EXPLANATION_PAGE, "\n".join(parts))


__all__ = ["EXPLANATION_PAGE", "RawExamples", "explanation_lines", "write_explanation_page"]

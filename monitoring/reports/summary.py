"""The short markdown summary of a window (a Prefect artifact), from a jinja2 template."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from monitoring.assessment import WindowAssessment

_TEMPLATES = Path(__file__).parent / "templates"


@cache
def _template():
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        autoescape=False,  # markdown; every value is ours or a number
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template("window_summary.md.j2")


def render_summary_markdown(assessment: WindowAssessment, extra: list[str] | None = None) -> str:
    """The window's summary: per-modality verdicts, estimate, realized, decision."""
    ordered = sorted(
        assessment.drift.modalities.items(), key=lambda kv: (not kv[1].drifted, kv[1].p_value)
    )
    return _template().render(
        a=assessment,
        modalities=ordered,
        realized=assessment.realized_lines(),
        extra=extra or [],
    )


__all__ = ["render_summary_markdown"]

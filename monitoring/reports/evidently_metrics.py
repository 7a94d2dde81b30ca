"""Custom Evidently metrics that carry mmops' calibrated verdicts into the report.

Evidently registers metric classes by subclassing, which needs its (slow) import; the
classes are therefore built on first use, not when this module is imported.
"""

from __future__ import annotations

from typing import Any

_EVIDENTLY: dict[str, Any] = {}


def evidently_metrics() -> dict[str, Any]:
    """The custom metric classes, built once: ``summary``, ``modality`` and ``overview``."""
    if _EVIDENTLY:
        return _EVIDENTLY
    from evidently.core.metric_types import (
        MetricTestResult,
        SingleValueCalculation,
        SingleValueMetric,
    )
    from evidently.legacy.renderers.html_widgets import (
        CounterData,
        WidgetSize,
        counter,
        table_data,
    )
    from evidently.legacy.tests.base_test import TestStatus

    class MonitoringWindowSummary(SingleValueMetric):
        """The window's decision and performance, carried as metric parameters."""

        action: str
        fingerprint: str = ""
        reasons: list[str] = []
        facts: list[list[str]] = []
        n_drifted: int = 0

    class MonitoringWindowSummaryCalculation(SingleValueCalculation[MonitoringWindowSummary]):
        def calculate(self, context, current_data, reference_data):
            metric = self.metric
            result = self.result(metric.n_drifted)
            result.widget = [
                counter(
                    title=self.display_name(),
                    size=WidgetSize.FULL,
                    counters=[
                        CounterData(label="action", value=metric.action),
                        CounterData(label="drifted modalities", value=str(metric.n_drifted)),
                        CounterData(label="issue", value=metric.fingerprint or "-"),
                    ],
                ),
                table_data(
                    title="Window facts",
                    column_names=["", "value"],
                    data=metric.facts + [["reason", r] for r in metric.reasons],
                ),
            ]
            return result

        def display_name(self) -> str:
            return "Monitoring decision"

    class CalibratedModalityDrift(SingleValueMetric):
        """One modality's verdict from ``compute_drift``; the value is the adjusted p-value."""

        modality: str
        p_value: float
        threshold: float
        drifted: bool
        score: float
        n_tests: int
        n_window: int
        n_reference: int
        top: list[list[str]] = []

    class CalibratedModalityDriftCalculation(SingleValueCalculation[CalibratedModalityDrift]):
        def calculate(self, context, current_data, reference_data):
            metric = self.metric
            verdict = "DRIFTED" if metric.drifted else "no drift"
            result = self.result(metric.p_value)
            result.widget = [
                counter(
                    title=self.display_name(),
                    size=WidgetSize.FULL,
                    counters=[
                        CounterData(label="verdict", value=verdict),
                        CounterData(label="adjusted p-value", value=_p(metric.p_value)),
                        CounterData(
                            label="p-value threshold", value=threshold_text(metric.threshold)
                        ),
                        CounterData(label="effect size", value=f"{metric.score:.3g}"),
                        CounterData(label="tests", value=str(metric.n_tests)),
                    ],
                ),
                table_data(
                    title=f"{metric.modality}: most drifted tests "
                    f"({metric.n_window} window / {metric.n_reference} reference rows)",
                    column_names=["test", "name", "effect size", "p-value (unadjusted)"],
                    data=metric.top,
                ),
            ]
            if context.configuration.include_tests:
                result.set_tests(
                    [
                        MetricTestResult(
                            id="calibrated_drift",
                            name=f"Calibrated drift: {metric.modality}",
                            description=f"{verdict}: adjusted p-value {_p(metric.p_value)} "
                            f"vs p-value threshold {threshold_text(metric.threshold)} "
                            f"({metric.n_tests} tests; effect size {metric.score:.3g}).",
                            status=TestStatus.FAIL if metric.drifted else TestStatus.SUCCESS,
                            metric_config=self.to_metric_config(),
                            test_config={},
                        )
                    ]
                )
            return result

        def display_name(self) -> str:
            return f"Calibrated drift: {self.metric.modality}"

    from evidently.legacy.renderers.html_widgets import (
        ColumnDefinition,
        RichTableDataRow,
        rich_table_data,
        text_widget,
    )
    from evidently.metrics import ValueDrift

    class DriftOverview(SingleValueMetric):
        """Every verdict of the window in one table: per modality (ours, calibrated) and
        per column (Evidently's ``ValueDrift`` p-values against our thresholds). The value
        is the number of drifted modalities. Its per-column tests replace ValueDrift's own,
        which print thresholds rounded to two decimals (0.001 shows as 0.00)."""

        modalities: list[list[Any]] = []  # [name, drifted, adjusted p, threshold, effect, tests]
        columns: list[list[Any]] = []  # [column, modality, method, threshold]

    class DriftOverviewCalculation(SingleValueCalculation[DriftOverview]):
        def calculate(self, context, current_data, reference_data):
            metric = self.metric
            rows, tests = [], []
            n_drifted = sum(bool(m[1]) for m in metric.modalities)
            for name, drifted, p_value, threshold, effect, n_tests in metric.modalities:
                rows.append(
                    _row("modality", name, name, drifted, p_value, threshold, effect, n_tests)
                )
            columns_drifted = 0
            for column, modality, method, threshold in metric.columns:
                found = context.calculate_metric(
                    ValueDrift(
                        column=column, method=method, threshold=threshold, tests=[]
                    ).to_calculation()
                )
                p_value = float(found.value)
                drifted = p_value < threshold
                columns_drifted += drifted
                test = "K-S" if method == "ks" else "chi-square"
                rows.append(_row("column", column, modality, drifted, p_value, threshold, None, 1))
                tests.append(
                    MetricTestResult(
                        id=f"column_drift_{column}",
                        name=f"Column drift: {column}",
                        description=f"{'DRIFTED' if drifted else 'no drift'}: {test} p-value "
                        f"{_p(p_value)} vs p-value threshold {threshold_text(threshold)} "
                        f"(modality {modality}).",
                        status=TestStatus.FAIL if drifted else TestStatus.SUCCESS,
                        metric_config=self.to_metric_config(),
                        test_config={},
                    )
                )
            rows.sort(key=lambda r: (not r.fields["drifted"], r.fields["p_value"]))
            for row in rows:
                row.fields["drifted"] = "DRIFTED" if row.fields["drifted"] else "no"
            result = self.result(n_drifted)
            result.widget = [
                counter(
                    title=self.display_name(),
                    size=WidgetSize.FULL,
                    counters=[
                        CounterData(
                            label="modalities drifted",
                            value=f"{n_drifted} of {len(metric.modalities)}",
                        ),
                        CounterData(
                            label="columns drifted",
                            value=f"{columns_drifted} of {len(metric.columns)}",
                        ),
                    ],
                ),
                rich_table_data(
                    title="Every verdict, drifted first (click a heading to sort)",
                    rows_per_page=max(len(rows), 1),
                    columns=[
                        ColumnDefinition("level", "level"),
                        ColumnDefinition("name", "name"),
                        ColumnDefinition("modality", "modality"),
                        ColumnDefinition("drifted", "drifted"),
                        ColumnDefinition("p-value", "p_value"),
                        ColumnDefinition("p-value threshold", "threshold"),
                        ColumnDefinition("effect size", "effect"),
                        ColumnDefinition("tests", "tests"),
                    ],
                    data=rows,
                ),
                text_widget(title="How to read these numbers", text=GLOSSARY),
            ]
            if context.configuration.include_tests:
                result.set_tests(tests)
            return result

        def display_name(self) -> str:
            return f"Overview: {sum(bool(m[1]) for m in self.metric.modalities)} of {len(self.metric.modalities)} modalities drifted"

    def _row(level, name, modality, drifted, p_value, threshold, effect, n_tests):
        return RichTableDataRow(
            fields={
                "level": level,
                "name": name,
                "modality": modality,
                "drifted": bool(drifted),
                "p_value": _significant(p_value),
                "threshold": _significant(threshold),
                "effect": "-" if effect is None else _significant(effect),
                "tests": n_tests,
            }
        )

    _EVIDENTLY.update(
        summary=MonitoringWindowSummary,
        modality=CalibratedModalityDrift,
        overview=DriftOverview,
        # keep the calculation classes referenced: subclassing registered them
        calculations=(
            MonitoringWindowSummaryCalculation,
            CalibratedModalityDriftCalculation,
            DriftOverviewCalculation,
        ),
    )
    return _EVIDENTLY


GLOSSARY = """\
- **p-value**: how likely a shift at least this large is if nothing changed. Small means
  drift. A modality's p-value is adjusted for its number of tests (Bonferroni).
- **p-value threshold**: a p-value below it is drift; the window's alpha split over the
  modalities (and, for a column, over its modality's columns). Shown to 4 significant
  digits, never rounded to zero.
- **effect size**: a statistic, not a probability: how large the shift is (the test's
  distance between window and reference). Large with a large p-value means few rows.
- Evidently's per-column widgets further down say **drift score**: for the K-S and
  chi-square tests used here, that is the column's p-value (not an effect size).
"""


def _p(value: float) -> str:
    return "< 1e-16" if value < 1e-16 else f"{value:.3g}"


def threshold_text(value: float) -> str:
    """A threshold at its real precision (4 significant digits): 0.001 stays 0.001."""
    return f"{value:.4g}"


def _significant(value: float) -> float:
    """``value`` rounded to 4 significant digits, kept a number so tables sort by it."""
    return float(f"{value:.4g}")


__all__ = ["evidently_metrics"]

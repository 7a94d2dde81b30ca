"""Custom Evidently metrics that carry mmops' calibrated verdicts into the report.

Evidently registers metric classes by subclassing, which needs its (slow) import; the
classes are therefore built on first use, not when this module is imported.
"""

from __future__ import annotations

from typing import Any

_EVIDENTLY: dict[str, Any] = {}


def evidently_metrics() -> dict[str, Any]:
    """The custom metric classes, built once: ``summary`` and ``modality``."""
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
                        CounterData(label="p-value threshold", value=f"{metric.threshold:.3g}"),
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
                            f"vs p-value threshold {metric.threshold:.3g} "
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

    _EVIDENTLY.update(
        summary=MonitoringWindowSummary,
        modality=CalibratedModalityDrift,
        # keep the calculation classes referenced: subclassing registered them
        calculations=(MonitoringWindowSummaryCalculation, CalibratedModalityDriftCalculation),
    )
    return _EVIDENTLY


def _p(value: float) -> str:
    return "< 1e-16" if value < 1e-16 else f"{value:.3g}"


__all__ = ["evidently_metrics"]

"""Per-window monitoring reports, all built from one ``WindowAssessment``: the Evidently
report (``window``, with our custom metrics in ``evidently_metrics``), the MLflow run of
the window (``mlflow_log``), the drift history and its plot (``history``) and the
markdown summary (``summary``). Nothing here imports Prefect or does work at import time.
"""

from monitoring.reports.history import (
    drift_history_row,
    history_frame,
    history_from_runs,
    load_history,
    plot_drift_history,
    save_history,
    upsert_history,
)
from monitoring.reports.mlflow_log import (
    POLICY_RECORD_TAG,
    WINDOW_TAG,
    LoggedWindow,
    log_window_report,
)
from monitoring.reports.summary import render_summary_markdown
from monitoring.reports.window import (
    ASSESSMENT_JSON,
    DRIFT_JSON,
    REPORT_HTML,
    REPORT_JSON,
    WindowReport,
    build_window_report,
    report_directory,
    window_stamp,
)

__all__ = [
    "ASSESSMENT_JSON",
    "DRIFT_JSON",
    "POLICY_RECORD_TAG",
    "REPORT_HTML",
    "REPORT_JSON",
    "WINDOW_TAG",
    "LoggedWindow",
    "WindowReport",
    "build_window_report",
    "drift_history_row",
    "history_frame",
    "history_from_runs",
    "load_history",
    "log_window_report",
    "plot_drift_history",
    "render_summary_markdown",
    "report_directory",
    "save_history",
    "upsert_history",
    "window_stamp",
]

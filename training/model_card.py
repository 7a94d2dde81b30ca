"""The model card: a markdown summary of what a registered version is and how it behaves."""

from __future__ import annotations

from collections.abc import Mapping

from features.schema import DatasetConfig
from training.evaluate import EvaluationResult, MetricSet
from training.train import TrainConfig, TrainingManifest

DEFAULT_INTENDED_USE = (
    "Scores {dataset} rows (one per {entity}) into calibrated probabilities of "
    "`{label}` in {classes}, from the text, image and tabular features of feature service "
    "`{service}`. Intended for ranking and decision support with monitoring in place; not "
    "for rows whose inputs fall outside the training window's distribution."
)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _metric_row(name: str, m: MetricSet) -> str:
    return (
        f"| {name} | {m.n_rows} | {_fmt(m.accuracy)} | {_fmt(m.macro_f1)} | "
        f"{_fmt(m.roc_auc)} | {_fmt(m.log_loss)} | {_fmt(m.ece)} |"
    )


def training_warnings(evaluation: EvaluationResult, metric: str = "macro_f1") -> list[str]:
    """What a reviewer should not miss in an evaluation, one sentence each: a modality
    whose removal did not hurt (the model learned nothing from it, or it misleads), and a
    model no better than the majority-class baseline.

    Args:
        evaluation: the test-split evaluation.
        metric: the metric compared (a ``MetricSet`` field).
    """
    full = getattr(evaluation.overall, metric)
    out: list[str] = []
    if full is None:
        return out
    baseline = getattr(evaluation.baseline, metric)
    if baseline is not None and full <= baseline:
        out.append(
            f"The model's test {metric} {full:.4f} is no better than the majority-class "
            f"baseline's {baseline:.4f}."
        )
    for modality, metrics in evaluation.ablation.items():
        without = getattr(metrics, metric)
        if without is not None and without >= full:
            out.append(
                f"Masking the {modality} modality did not hurt: test {metric} {without:.4f} "
                f"without it vs {full:.4f} with it, so the model gains nothing from "
                f"{modality} (or is misled by it)."
            )
    return out


def render_model_card(
    config: DatasetConfig,
    train_config: TrainConfig,
    manifest: TrainingManifest,
    evaluation: EvaluationResult,
    monitoring_thresholds: Mapping[str, float] | None = None,
    intended_use: str | None = None,
    validation_summary: str | None = None,
    code_version: str | None = None,
) -> str:
    """Markdown model card for one trained model.

    Args:
        config: the dataset declaration.
        train_config: training parameters.
        manifest: the training-set manifest (window, rows, hash).
        evaluation: test-split evaluation.
        monitoring_thresholds: thresholds the monitoring applies to this model.
        intended_use: overrides the default intended-use paragraph.
        validation_summary: the data-quality gate's summary for the training set.
        code_version: git commit the model was trained from.
    """
    header = "| rows | accuracy | macro-F1 | ROC-AUC | log-loss | ECE |"
    rule = "|---|---|---|---|---|---|---|"
    use = intended_use or DEFAULT_INTENDED_USE.format(
        dataset=config.name,
        entity=config.entity_key,
        label=config.label,
        classes=", ".join(f"`{c}`" for c in config.classes),
        service=config.feature_service_name,
    )
    lines = [f"# Model card: {config.name} `{config.label}` classifier", ""]
    warnings = training_warnings(evaluation)
    if warnings:
        lines += ["## Warnings", "", *(f"- **{w}**" for w in warnings), ""]
    lines += [
        "## Intended use",
        use,
        "",
        "## Data",
        f"- Feature service: `{manifest.feature_service_name}` "
        f"(version {manifest.feature_service_version}), point-in-time from Feast.",
        f"- Modalities: {', '.join(manifest.modalities)}; inputs: "
        f"{', '.join(f'`{c}`' for c in manifest.input_columns)}.",
        f"- Not model inputs (monitored only): {', '.join(config.monitor_only) or 'none'}.",
        "- Split by time (oldest rows train, newest test):",
        "",
        "| split | rows | from | to | class counts |",
        "|---|---|---|---|---|",
    ]
    for name in ("train", "validation", "test"):
        w = getattr(manifest, name)
        lines.append(f"| {name} | {w.n_rows} | {w.start} | {w.end} | {w.class_counts} |")
    lines += [
        "",
        f"- Data hash (SHA-256): `{manifest.data_hash}`",
        f"- Code version: `{code_version or 'unknown'}`",
    ]
    if validation_summary:
        lines += ["", "Data-quality gate:", "", "```", validation_summary.strip(), "```"]
    lines += [
        "",
        "## Training",
        f"- Fusion MLP, hidden {train_config.hidden_size}, fused head "
        f"{train_config.fusion_hidden_size}, modality dropout {train_config.modality_dropout}, "
        f"seed {train_config.seed}, early stopping on validation loss "
        f"(patience {train_config.patience}, max {train_config.epochs} epochs).",
        "",
        "## Metrics (test split, calibrated)",
        "",
        f"| set {header}",
        rule,
        _metric_row("model", evaluation.overall),
        _metric_row("majority baseline", evaluation.baseline),
    ]
    for modality, metrics in evaluation.ablation.items():
        lines.append(_metric_row(f"without {modality}", metrics))
    lines += ["", "### Slices", "", f"| slice {header}", rule]
    for s in evaluation.slices:
        lines.append(_metric_row(s.key, s.metrics))
    lines += [
        "",
        "## Calibration",
        f"Temperature scaling fitted on the validation split: T = {evaluation.temperature:.3f}. "
        f"Test ECE {_fmt(evaluation.uncalibrated.ece)} before, {_fmt(evaluation.overall.ece)} "
        "after (reliability diagram in `plots/reliability.png`).",
        "",
        "## Limitations",
        "- Trained on one time window; performance degrades under drift in any modality, "
        "which monitoring watches per modality.",
        "- Rows missing a modality are scored from the others, with lower accuracy "
        "(see the `modalities=` slices); slices with few rows have wide uncertainty.",
        "- Probabilities are calibrated on the validation window only; calibration breaks "
        "under concept drift, which label-free estimates cannot see.",
        "- Embeddings come from frozen pretrained encoders; their biases carry over.",
    ]
    lines += ["", "## Monitoring thresholds"]
    if monitoring_thresholds:
        lines += ["", "| threshold | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in monitoring_thresholds.items()]
    else:
        lines.append("None given at training time.")
    return "\n".join(lines) + "\n"

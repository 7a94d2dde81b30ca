from __future__ import annotations

import pytest

from training.evaluate import evaluate_model
from training.model_card import render_model_card, training_warnings


@pytest.fixture(scope="module")
def evaluation(trained, synth_config):
    return evaluate_model(trained.model, trained.splits.test, synth_config.label)


def test_a_modality_whose_removal_helps_is_flagged_first_in_the_card(
    evaluation, trained, synth_config
):
    """Issue 14: v2's ablation "without photo" beat the full model and nothing said so."""
    assert training_warnings(evaluation) == []
    full = evaluation.overall
    better = full.model_copy(update={"macro_f1": full.macro_f1 + 0.02})
    ablated = evaluation.model_copy(update={"ablation": {**evaluation.ablation, "photo": better}})
    (warning,) = training_warnings(ablated)
    assert warning.startswith("Masking the photo modality did not hurt")
    assert f"{better.macro_f1:.4f} without it vs {full.macro_f1:.4f}" in warning
    card = render_model_card(synth_config, trained.train_config, trained.manifest, ablated)
    assert card.index("## Warnings") < card.index("## Intended use")


def test_a_model_no_better_than_the_baseline_is_flagged(evaluation):
    weak = evaluation.model_copy(update={"overall": evaluation.baseline, "ablation": {}})
    (warning,) = training_warnings(weak)
    assert "no better than the majority-class baseline" in warning


def test_version_description_fits_a_postgres_registry_field_verdict_first():
    # The prod registry (PostgreSQL) refused a 5,000+ character verdict + model card.
    from training.registry import MAX_TAG_CHARS, _fit_description

    verdict = "<!-- gate verdict -->\n**Gate verdict: PROMOTE**\n<!-- /gate verdict -->\n\n"
    card = "# Model card\n" + "x" * 6000
    text = _fit_description(verdict, card)
    assert len(text) <= MAX_TAG_CHARS
    assert text.startswith(verdict) and "model_card.md" in text
    assert _fit_description(verdict, "short card") == verdict + "short card"
    huge = "v" * 7000
    assert len(_fit_description(huge, card)) <= MAX_TAG_CHARS

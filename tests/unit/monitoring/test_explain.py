from __future__ import annotations

import numpy as np
import pytest

from monitoring.explain import (
    ExplainConfig,
    explain_drift,
    explain_embedding,
    explain_tabular,
    render_image_grid,
    witness_scores,
)
from tests.unit.monitoring.toy_world import toy_frame, toy_reference


@pytest.fixture(scope="module")
def drift_reference():
    return toy_reference(toy_frame(2000, seed=1))


def test_witness_scores_rank_the_rows_from_the_new_region_first():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(400, 2))
    window = np.vstack([rng.normal(size=(100, 2)), rng.normal(size=(100, 2)) + 5.0])
    scores, bandwidth = witness_scores(reference, window)
    assert bandwidth > 0
    top = np.argsort(-scores)[:50]
    assert np.all(top >= 100)
    assert scores[100:].mean() > 0 > scores[:100].mean()


def test_embedding_explanation_points_at_the_new_camera(drift_reference):
    window = toy_frame(300, seed=5, share_new=0.3)
    explanation = explain_embedding(drift_reference, window, "photo", ExplainConfig(top_rows=10))
    assert explanation is not None
    assert explanation.column == "photo_emb" and explanation.kind == "image"
    assert all(window["region"].iloc[r.row] == "new" for r in explanation.top_rows)
    assert explanation.top_rows[0].entity == str(window["id"].iloc[explanation.top_rows[0].row])
    first = explanation.clusters[0]
    assert first.window_share > 0.1 and first.reference_share < 0.02
    # The clusters the reference barely has hold the new camera's rows.
    new_share = float((window["region"] == "new").mean())
    unseen = sum(c.window_share for c in explanation.clusters if c.lift > 5)
    assert unseen == pytest.approx(new_share, abs=0.05)
    assert all(window["region"].iloc[r.row] == "new" for r in first.examples)
    assert sum(c.n_window for c in explanation.clusters) == explanation.n_window == 300


def test_undrifted_window_has_no_cluster_far_over_represented(drift_reference):
    explanation = explain_embedding(drift_reference, toy_frame(300, seed=6), "photo")
    assert explanation is not None
    assert explanation.clusters[0].window_share - explanation.clusters[0].reference_share < 0.1


def test_tabular_explanation_ranks_the_moved_column_first(drift_reference):
    window = toy_frame(300, seed=7)
    window["x"] = window["x"] + 2.0
    effects = explain_tabular(drift_reference, window)
    assert effects[0].column == "x" and effects[0].kind == "numeric"
    assert effects[0].window["p50"] > effects[0].reference["p50"] + 1.5
    channel = next(e for e in effects if e.column == "channel")
    assert channel.effect < 0.15
    assert set(channel.window) >= {"web", "app"}


def test_explain_drift_covers_each_modality_and_skips_unknown_columns(drift_reference):
    window = toy_frame(200, seed=8, share_new=0.3)
    explanation = explain_drift(drift_reference, window, columns=["photo", "nothing"])
    assert set(explanation.embeddings) == {"photo"}
    assert explanation.tabular


def test_render_image_grid_writes_a_png(tmp_path):
    images = [np.full((8, 8), i * 20, dtype=np.uint8) for i in range(5)]
    path = render_image_grid(images, tmp_path / "grid.png", captions=[f"#{i}" for i in range(5)])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        render_image_grid([], tmp_path / "empty.png")
    with pytest.raises(ValueError):
        render_image_grid(images, tmp_path / "bad.png", captions=["one"])


def test_explanation_renders_as_email_lines_and_a_self_contained_page(drift_reference, tmp_path):
    from monitoring.reports.explanation import (
        RawExamples,
        explanation_lines,
        write_explanation_page,
    )

    window = toy_frame(300, seed=5, share_new=0.3)
    window["x"] = window["x"] + 2.0  # and a tabular shift
    explanation = explain_drift(drift_reference, window, ExplainConfig(top_rows=6))
    new_rows = window[window["region"] == "new"]["id"].astype(str)
    raw = RawExamples(
        images={e: {"photo": np.full((8, 8, 3), 200, dtype=np.uint8)} for e in new_rows}
    )
    lines = explanation_lines(explanation, raw)
    camera = next(line for line in lines if line.startswith("photo (image)"))
    assert "of the window but" in camera and "thumbnails" in camera
    assert any(line.startswith("x: median") and "KS distance" in line for line in lines)
    page = write_explanation_page(explanation, tmp_path, raw)
    text = page.read_text()
    assert page.name == "drift_examples.html"
    assert "data:image/png;base64," in text  # the thumbnails are inline, the page travels
    assert "<script" not in text


def test_explanation_text_snippets_are_scrubbed_and_escaped(drift_reference, tmp_path):
    from monitoring.reports.explanation import RawExamples, write_explanation_page

    window = toy_frame(300, seed=5, share_new=0.3)
    explanation = explain_drift(drift_reference, window, ExplainConfig(top_rows=6))
    hostile = "<script>x()</script> mail jane@example.com"
    entity = explanation.embeddings["photo"].top_rows[0].entity
    # A text column of the same name as the embedding's source, to exercise snippets.
    raw = RawExamples(texts={entity: {"photo": hostile}})
    item = explanation.embeddings["photo"].model_copy(update={"kind": "text"})
    explanation = explanation.model_copy(update={"embeddings": {"photo": item}})
    text = write_explanation_page(explanation, tmp_path, raw).read_text()
    assert "<script>" not in text and "jane@example.com" not in text
    assert "&lt;script&gt;" in text and "[EMAIL]" in text

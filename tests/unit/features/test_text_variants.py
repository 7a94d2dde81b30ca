"""Text encoder variants: the ONNX path reproduces the PyTorch encoder, int8 stays close,
each variant keys its own cache, and stores refuse vectors of another variant."""

from __future__ import annotations

import numpy as np
import pytest

from features.embedding import (
    EncoderMismatchError,
    Encoders,
    check_encoders,
    embed_frame,
    encoder_ids,
    read_encoder_record,
    record_encoders,
)
from features.encoders import (
    INT8_FP32_MATMULS,
    TEXT_ENCODER_ID,
    EmbeddingCache,
    TextEncoder,
    onnx_text_model,
    text_encoder_id,
)


@pytest.fixture(scope="module")
def texts(demo_sources):
    return demo_sources.reviews["review"].tolist()[:48]


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


def test_onnx_fp32_reproduces_the_pytorch_encoder(encoders, texts, onnx_dir):
    onnx = TextEncoder(variant="onnx-fp32", artifact_dir=onnx_dir)
    reference = encoders.text.encode(texts)
    vectors = onnx.encode(texts)
    assert vectors.shape == reference.shape and vectors.dtype == np.float32
    assert (vectors * reference).sum(1).min() > 0.9999


def test_int8_is_close_to_fp32_unit_norm_and_built_once(encoders, texts, onnx_dir):
    int8 = TextEncoder(variant="int8", artifact_dir=onnx_dir)
    built = next(onnx_dir.glob("*int8-mixed1.onnx"))
    stamp = built.stat().st_mtime_ns
    vectors = int8.encode(texts)
    cosine = (vectors * encoders.text.encode(texts)).sum(1)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert cosine.min() >= 0.99  # the goal, for every text
    assert not np.allclose(cosine, 1.0, atol=1e-4)  # really another network
    TextEncoder(variant="int8", artifact_dir=onnx_dir)  # reuses the file
    assert built.stat().st_mtime_ns == stamp
    assert len(list(onnx_dir.iterdir())) == 2  # the two .onnx files, no leftovers


def test_int8_keeps_the_sensitive_matmuls_in_fp32(encoders, onnx_dir):
    import onnx

    int8 = onnx.load(str(onnx_text_model(encoders.text._model, "int8", onnx_dir)))
    kinds = {node.name: node.op_type for node in int8.graph.node}
    assert all(kinds[name] == "MatMul" for name in INT8_FP32_MATMULS)
    assert sum(kind == "MatMulInteger" for kind in kinds.values()) == 36 - len(INT8_FP32_MATMULS)


def test_a_file_or_cache_of_the_first_int8_recipe_is_never_reused(encoders, onnx_dir, tmp_path):
    first_recipe = f"{TEXT_ENCODER_ID}+int8"  # every matmul int8: cosine down to 0.977
    assert text_encoder_id("int8") not in (first_recipe, TEXT_ENCODER_ID)
    stale = tmp_path / f"{first_recipe.replace('@', '_')}.onnx"
    stale.write_bytes(b"not a model: loading it would fail")
    built = onnx_text_model(encoders.text._model, "int8", tmp_path)
    assert built != stale and built.stat().st_size > 1_000_000
    assert stale.read_bytes().startswith(b"not a model")
    old = EmbeddingCache(tmp_path, first_recipe)
    old.put(["k"], np.ones((1, 384), np.float32))
    old.save()
    assert "k" not in EmbeddingCache(tmp_path, text_encoder_id("int8"))


def test_variants_have_their_own_ids_and_unknown_ones_fail(demo_config):
    assert text_encoder_id("fp32") == TEXT_ENCODER_ID  # earlier caches stay valid
    assert len({text_encoder_id(v) for v in ("fp32", "onnx-fp32", "int8")}) == 3
    with pytest.raises(ValueError, match="unknown text encoder variant 'int4'"):
        Encoders.load(demo_config, text_variant="int4")
    assert encoder_ids(demo_config, "int8")["review"] == text_encoder_id("int8")


def test_the_cache_never_mixes_variants(demo_config, demo_sources, encoders, onnx_dir, tmp_path):
    from datetime import timedelta

    from features.demo_data import DEMO_START, generate_rows

    raw, _ = generate_rows(
        demo_sources.subset(12, 12), 20, DEMO_START, DEMO_START + timedelta(days=1), seed=3
    )
    fp32 = embed_frame(raw, demo_config, encoders, cache_dir=tmp_path)
    int8_encoders = Encoders(TextEncoder(variant="int8", artifact_dir=onnx_dir), encoders.image)
    int8 = embed_frame(raw, demo_config, int8_encoders, cache_dir=tmp_path)
    a, b = np.stack(fp32["review_emb"]), np.stack(int8["review_emb"])
    present = fp32["review_present"].to_numpy() == 1
    assert present.sum() > 0 and not np.array_equal(a[present], b[present])
    assert len(EmbeddingCache(tmp_path, text_encoder_id("int8"))) == len(
        EmbeddingCache(tmp_path, TEXT_ENCODER_ID)
    )
    again = embed_frame(raw, demo_config, int8_encoders, cache_dir=tmp_path)  # from the cache
    np.testing.assert_array_equal(np.stack(again["review_emb"]), b)


def test_a_store_refuses_vectors_of_another_variant(demo_config, tmp_path):
    assert read_encoder_record(tmp_path) is None
    check_encoders(None, encoder_ids(demo_config, "int8"), "the offline store")  # empty store
    record_encoders(tmp_path, encoder_ids(demo_config, "fp32"))
    recorded = read_encoder_record(tmp_path)
    check_encoders(recorded, encoder_ids(demo_config, "fp32"), "the offline store")
    with pytest.raises(EncoderMismatchError, match=r"the offline store .*\+int8-mixed1 now"):
        check_encoders(recorded, encoder_ids(demo_config, "int8"), "the offline store")

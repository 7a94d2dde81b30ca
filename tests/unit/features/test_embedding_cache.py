"""The embedding cache: merges on save, survives a corrupt file by re-encoding."""

from __future__ import annotations

import logging

import numpy as np

from features.encoders import EmbeddingCache, embed_with_cache


def _encode_counting(calls):
    def encode(items):
        calls.extend(items)
        return np.array([[float(len(i)), 1.0] for i in items], np.float32)

    return encode


def test_two_caches_saving_in_turn_keep_each_others_keys(tmp_path):
    first, second = EmbeddingCache(tmp_path, "enc@1"), EmbeddingCache(tmp_path, "enc@1")
    first.put(["a", "b"], np.ones((2, 2)))
    second.put(["c"], np.zeros((1, 2)))
    first.save()
    second.save()  # loaded before first saved: must not drop a and b
    assert sorted(EmbeddingCache(tmp_path, "enc@1")._table) == ["a", "b", "c"]
    assert "a" in second  # and it sees what the other process saved


def test_a_truncated_cache_is_moved_aside_named_and_rebuilt_by_re_encoding(tmp_path, caplog):
    cache = EmbeddingCache(tmp_path, "enc@1")
    cache.put(["abc", "de"], np.ones((2, 2)))
    cache.save()
    data = cache.path.read_bytes()
    cache.path.write_bytes(data[: len(data) // 2])

    with caplog.at_level(logging.WARNING):
        reopened = EmbeddingCache(tmp_path, "enc@1")
    assert len(reopened) == 0
    assert str(cache.path) in caplog.text
    assert len(list(tmp_path.glob("*.corrupt-*"))) == 1

    calls: list[str] = []
    vectors = embed_with_cache(
        ["abc", "de", None],
        lambda rows: [["abc", "de"][r] for r in rows],
        _encode_counting(calls),
        reopened,
        2,
    )
    assert calls == ["abc", "de"]  # re-encoded
    assert vectors[:, 0].tolist() == [3.0, 2.0, 0.0]
    reopened.save()
    assert len(EmbeddingCache(tmp_path, "enc@1")) == 2


def test_saving_without_new_keys_writes_nothing(tmp_path):
    cache = EmbeddingCache(tmp_path, "enc@1")
    cache.save()
    assert not cache.path.exists()

"""The classifier as an MLflow model from code: no pickle, weights checked at load."""

from __future__ import annotations

import numpy as np
import pytest

from training.pyfunc import ModelIntegrityError, load_pyfunc, save_pyfunc


def test_the_model_is_logged_from_code_and_tampered_weights_are_refused(trained, tmp_path):
    path = save_pyfunc(trained.model, tmp_path / "model", trained.splits.test)
    assert not list(path.rglob("*.pkl"))  # no pickled wrapper to unpickle
    assert "pyfunc_code.py" in (path / "MLmodel").read_text()
    proba = load_pyfunc(path).predict(trained.splits.test.head(5))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    weights = next(p for p in path.rglob("*") if p.suffix in {".pt", ".pth"})
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="changed since logging"):
        load_pyfunc(path)

"""Shared fixtures: the demo sources, config and encoders are loaded once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def demo_config():
    from features.demo_data import demo_dataset_config

    return demo_dataset_config()


@pytest.fixture(scope="session")
def demo_sources():
    from features.demo_data import DemoSources

    return DemoSources.load()


@pytest.fixture(scope="session")
def encoders(demo_config):
    from features.embedding import Encoders

    return Encoders.load(demo_config)


@pytest.fixture(scope="session")
def embedding_cache_dir(tmp_path_factory) -> Path:
    """One embedding cache for the session: each distinct text or photo is embedded once."""
    return tmp_path_factory.mktemp("embedding-cache")

"""Feast declarations of the configured dataset (read by `feast apply` / `feast plan`).

The objects are derived from the dataset config named by MMOPS_DATASET_CONFIG (default:
the demo dataset) by features.definitions.build_definitions, the same function the
pipeline uses, so the CLI and the code register identical definitions.
"""

import os
from pathlib import Path

from features.definitions import build_definitions
from features.schema import load_dataset_config

_config = load_dataset_config(
    os.environ.get(
        "MMOPS_DATASET_CONFIG",
        str(Path(__file__).resolve().parent.parent / "demo" / "dataset.yaml"),
    )
)
_definitions = build_definitions(_config, Path(os.environ["MMOPS_DATA_DIR"]) / "feast" / "offline")

entity = _definitions.entity
feature_service = _definitions.service
globals().update({f"{kind}_source": source for kind, source in _definitions.sources.items()})
globals().update({f"{kind}_view": view for kind, view in _definitions.views.items()})

from pathlib import Path

import pytest
from pydantic import ValidationError

from features.schema import DatasetConfig, load_dataset_config


def _base(**changes):
    spec = {
        "name": "shop",
        "entity_key": "id",
        "timestamp": "ts",
        "label": "y",
        "classes": ["a", "b"],
        "text": [{"name": "body"}],
        "numeric": [{"name": "price", "min_value": 0}],
        "categorical": [{"name": "channel", "categories": ["web", "app"]}],
    }
    spec.update(changes)
    return spec


def test_derived_names_follow_the_config():
    config = DatasetConfig.model_validate(_base())
    assert config.feature_service_name == "shop_v1"
    assert config.embedding_column("body") == "body_emb"
    assert config.model_tabular_columns == ["price", "channel"]
    assert config.raw_columns == ["id", "ts", "y", "body", "price", "channel"]


def test_monitor_only_columns_are_not_model_inputs():
    config = DatasetConfig.model_validate(
        _base(numeric=[{"name": "price"}, {"name": "load"}], monitor_only=["load"])
    )
    assert "load" in config.tabular_columns
    assert "load" not in config.model_tabular_columns


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"numeric": [{"name": "body"}]}, "more than once"),
        ({"monitor_only": ["nope"]}, "not tabular"),
        ({"entity_key": "order id"}, "not a valid identifier"),
        ({"classes": ["only"]}, "at least 2"),
        ({"text": [], "numeric": [], "categorical": []}, "at least one model input"),
    ],
)
def test_invalid_configs_name_the_problem(change, message):
    with pytest.raises(ValidationError, match=message):
        DatasetConfig.model_validate(_base(**change))


def test_yaml_round_trip(tmp_path: Path):
    path = tmp_path / "dataset.yaml"
    path.write_text(
        "name: shop\nentity_key: id\ntimestamp: ts\nlabel: y\nclasses: [a, b]\n"
        "numeric:\n  - {name: price}\n"
    )
    assert load_dataset_config(path).numeric_columns == ["price"]


def test_yaml_that_is_not_a_mapping_is_rejected(tmp_path: Path):
    path = tmp_path / "dataset.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="mapping"):
        load_dataset_config(path)


def test_demo_config_declares_three_modalities(demo_config):
    assert demo_config.text_columns and demo_config.image_columns
    assert len(demo_config.tabular_columns) >= 10

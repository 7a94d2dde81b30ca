from pathlib import Path

import pytest
from pydantic import ValidationError

from features.errors import InvalidConfigError
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


def test_a_typo_in_the_config_is_an_error_naming_the_key(tmp_path):
    path = tmp_path / "dataset.yaml"
    path.write_text(
        "name: shop\nentity_key: id\ntimestamp: ts\nlabel: y\nclasses: [a, b]\n"
        "text: [{name: body}]\nnumerics: [{name: price}]\nimageroot: /srv\n"
    )
    with pytest.raises(InvalidConfigError) as caught:
        load_dataset_config(path)
    assert "numerics" in str(caught.value) and "imageroot" in str(caught.value)
    assert isinstance(caught.value.__cause__, ValidationError)
    with pytest.raises(ValidationError, match="min_char"):
        DatasetConfig.model_validate(_base(text=[{"name": "body", "min_char": 3}]))


@pytest.mark.parametrize("bad", ["shop\n", "../etc", "a b", "1st", "x/y", "shop\n../x", "ünï"])
def test_names_and_column_names_are_whole_identifiers(bad):
    with pytest.raises(ValidationError, match="identifier"):
        DatasetConfig.model_validate(_base(name=bad))
    with pytest.raises(ValidationError, match="identifier"):
        DatasetConfig.model_validate(_base(text=[{"name": bad}]))
    with pytest.raises(ValidationError, match="identifier"):
        DatasetConfig.model_validate(_base(categorical=[{"name": bad, "categories": ["a"]}]))


def test_cross_field_checks():
    with pytest.raises(ValidationError, match="classes listed more than once"):
        DatasetConfig.model_validate(_base(classes=["a", "b", "a"]))
    with pytest.raises(ValidationError, match="min_value 5.0 is greater than max_value 1.0"):
        DatasetConfig.model_validate(_base(numeric=[{"name": "p", "min_value": 5, "max_value": 1}]))
    with pytest.raises(ValidationError, match="categories listed more than once"):
        DatasetConfig.model_validate(_base(categorical=[{"name": "c", "categories": ["x", "x"]}]))
    with pytest.raises(ValidationError, match="min_chars"):
        DatasetConfig.model_validate(_base(text=[{"name": "b", "min_chars": 9, "max_chars": 3}]))
    with pytest.raises(ValidationError, match="timezone"):
        DatasetConfig.model_validate(_base(timezone="Mars/Olympus"))
    with pytest.raises(ValidationError, match="csv_encoding"):
        DatasetConfig.model_validate(_base(csv_encoding="utf-99"))


def test_numeric_classes_and_integer_categories_are_kept_as_text():
    config = DatasetConfig.model_validate(
        _base(
            classes=[0, 1],
            categorical=[
                {"name": "team", "dtype": "int", "categories": [1, 2], "unknown_category": "other"}
            ],
        )
    )
    assert config.classes == ["0", "1"]
    assert config.categorical[0].categories == ["1", "2", "other"]

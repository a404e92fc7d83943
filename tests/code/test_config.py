from pathlib import Path

import pytest

from mlgate.config import ConfigError, load_config
from tests.conftest import DEFAULT_CONFIG


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_default_config_loads_with_every_section():
    cfg = load_config(DEFAULT_CONFIG)
    assert cfg.data.target == "species"
    assert set(cfg.data.features_of("categorical")) == {"island", "sex"}
    assert cfg.promotion.aliases.champion == "champion"
    assert [t.metric for t in cfg.promotion.thresholds] == ["accuracy_score", "f1_score", "log_loss"]


def test_unknown_key_is_named(tmp_path):
    text = DEFAULT_CONFIG.read_text().replace("experiment: mlgate-penguins", "experiment: x\nexperimnt: y")
    with pytest.raises(ConfigError, match=r"experimnt: unknown key"):
        load_config(_write(tmp_path, text))


def test_missing_key_is_named(tmp_path):
    text = DEFAULT_CONFIG.read_text().replace("model_name: penguins-classifier\n", "")
    with pytest.raises(ConfigError, match=r"model_name: Field required"):
        load_config(_write(tmp_path, text))


def test_wrong_type_and_nested_unknown_key(tmp_path):
    text = DEFAULT_CONFIG.read_text().replace("test_fraction: 0.3", "test_fraction: lots\n  shuffle: true")
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, text))
    assert "split.test_fraction" in str(err.value) and "split.shuffle: unknown key" in str(err.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "a: [1, 2"))
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(_write(tmp_path, "- 1\n- 2\n"))


@pytest.mark.parametrize(
    "override, message",
    [
        ({"data.target": "island"}, "also listed as a feature"),
        (
            {"promotion.thresholds": [{"metric": "a", "max_regression": 0.1, "min_improvement": 0.1}]},
            "not both",
        ),
        ({"data.features": [{"name": "x", "type": "categorical", "min": 1}]}, "numeric features only"),
        (
            {"data.features": [{"name": "x", "type": "numeric"}, {"name": "x", "type": "numeric"}]},
            "duplicate",
        ),
    ],
)
def test_semantic_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DEFAULT_CONFIG, override)


def test_digest_is_stable_and_tracks_content():
    a, b = load_config(DEFAULT_CONFIG), load_config(DEFAULT_CONFIG)
    assert a.digest() == b.digest()
    assert a.digest() != load_config(DEFAULT_CONFIG, {"split.seed": 7}).digest()


def test_integer_categories_and_classes_are_read_as_text():
    cfg = load_config(
        DEFAULT_CONFIG,
        {
            "data.classes": [0, 1],
            "data.features": [{"name": "grade", "type": "categorical", "categories": [1, 2, 3]}],
        },
    )
    assert cfg.data.features[0].categories == ["1", "2", "3"] and cfg.data.classes == ["0", "1"]


@pytest.mark.parametrize(
    "override, message",
    [
        (
            {"task": "classification", "estimator.class": "sklearn.linear_model.Ridge"},
            "Ridge is a regressor but task is classification: set task: regression, or choose a classifier",
        ),
        (
            {"task": "regression"},
            "RandomForestClassifier is a classifier but task is regression: set task: classification",
        ),
        (
            {"estimator.class": "sklearn.linear_model.Ridge"},
            "data.classes: a regression target has no classes; remove data.classes",
        ),
        ({"estimator.class": "sklearn.preprocessing.StandardScaler"}, "neither a classifier nor a regressor"),
        ({"estimator.class": "sklearn.nowhere.Model"}, "estimator.class: cannot import"),
    ],
)
def test_task_and_estimator_must_agree_in_one_line(override, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(DEFAULT_CONFIG, override)
    assert "\n" not in str(err.value)


def test_task_is_inferred_and_directions_follow_the_metric():
    cfg = load_config(DEFAULT_CONFIG)
    assert cfg.task == "classification" and not cfg.is_regression
    regression = load_config(
        DEFAULT_CONFIG,
        {
            "estimator.class": "sklearn.linear_model.Ridge",
            "data.classes": None,
            "promotion.thresholds": [
                {"metric": "root_mean_squared_error"},
                {"metric": "r2_score"},
                {"metric": "mean_absolute_error", "direction": "higher"},
            ],
        },
    )
    assert regression.task == "regression"
    assert [t.direction for t in regression.promotion.thresholds] == ["lower", "higher", "higher"]


@pytest.mark.parametrize("path", sorted((DEFAULT_CONFIG.parent / "examples").glob("*.yaml")), ids=str)
def test_every_shipped_example_loads_and_its_data_is_there(path):
    cfg = load_config(path)
    assert (DEFAULT_CONFIG.parent.parent / cfg.data.source).is_file()

from pathlib import Path

import mlflow.pyfunc
import pandas as pd

from mlgate.models import allow_model_loading


def test_trained_model_fixture_loads_and_predicts(trained_model):
    model_dir = Path(trained_model["model_dir"])
    assert (model_dir / "MLmodel").is_file()
    test = pd.read_parquet(trained_model["test_path"])
    with allow_model_loading():
        model = mlflow.pyfunc.load_model(str(model_dir))
    preds = model.predict(test[trained_model["config"].data.feature_names])
    assert len(preds) == len(test)
    assert set(preds) <= {"Adelie", "Chinstrap", "Gentoo"}

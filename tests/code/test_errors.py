import requests

from mlgate.errors import describe_error


def test_unreachable_server_is_named(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    exc = requests.exceptions.ConnectionError(
        "HTTPConnectionPool(host='127.0.0.1', port=5999): Max retries exceeded"
    )
    assert describe_error(exc).startswith(
        "cannot reach the MLflow tracking server at http://127.0.0.1:5999: "
    )


def test_other_errors_keep_their_first_line(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    assert describe_error(ValueError("bad value\nmore detail")) == "bad value"
    assert describe_error(KeyError()) == "KeyError"

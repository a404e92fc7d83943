"""The tracking client's fail-fast defaults, set once for every mlgate command and what it starts."""

from __future__ import annotations

from mlgate.client import CLIENT_DEFAULTS, apply_client_defaults


def test_defaults_fill_only_what_the_environment_does_not_set() -> None:
    env = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "300"}
    applied = apply_client_defaults(env)
    assert applied["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "300"  # the user's value wins
    assert applied["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == CLIENT_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    assert set(env) == set(CLIENT_DEFAULTS)


def test_the_worst_case_of_a_hung_server_stays_under_a_minute() -> None:
    retries = int(CLIENT_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
    timeout = int(CLIENT_DEFAULTS["MLFLOW_HTTP_REQUEST_TIMEOUT"])
    factor = int(CLIENT_DEFAULTS["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"])
    jitter = float(CLIENT_DEFAULTS["MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"])
    backoff = sum(factor * 2**i + jitter for i in range(retries))
    assert (retries + 1) * timeout + backoff < 60

"""The app through the test client: every endpoint, every input format, every kind of bad input."""

from __future__ import annotations

import json
import logging
import time
import types
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient

from mlgate.serving import service as service_module
from mlgate.serving.app import create_app
from mlgate.serving.model import ServedModel
from mlgate.serving.settings import ServingSettings
from tests.serving.conftest import records

JSON = {"content-type": "application/json"}


def _expected(served_model: ServedModel, rows: pd.DataFrame) -> list[Any]:
    return served_model.pipeline.predict(
        rows.astype({c.name: object for c in served_model.columns if c.type == "string"})
    ).tolist()


def _post(client: TestClient, payload: Any, path: str = "/invocations") -> Any:
    return client.post(path, content=json.dumps(payload), headers=JSON)


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_not_ready_before_start_up(served_model: ServedModel) -> None:
    app = create_app(ServingSettings(), served_model)
    response = TestClient(app).get("/ready")  # no `with`: the lifespan (load + warm-up) has not run
    assert response.status_code == 503
    assert response.json()["error_code"] == "NOT_READY"


def test_metadata(client: TestClient, trained_model: dict[str, Any]) -> None:
    meta = client.get("/metadata").json()
    cfg = trained_model["config"]
    assert meta["name"] == cfg.model_name
    registered = yaml.safe_load((trained_model["model_dir"] / "registered_model_meta").read_text())
    assert meta["version"] == str(registered["model_version"])
    assert meta["run_id"] and meta["git_commit"]
    assert [c["name"] for c in meta["signature"]["inputs"]] == cfg.data.feature_names
    assert meta["classes"] == cfg.data.classes
    assert {"scikit-learn", "numpy", "pandas", "fastapi"} <= set(meta["packages"])
    assert client.get("/version").json()["name"] == cfg.model_name


@pytest.mark.parametrize("fmt", ["dataframe_split", "dataframe_records", "instances", "inputs", "csv"])
def test_invocations_formats_match_in_process_predict(
    client: TestClient, served_model: ServedModel, test_rows: pd.DataFrame, fmt: str
) -> None:
    rows = test_rows.head(25)
    recs = records(rows)
    if fmt == "csv":
        response = client.post(
            "/invocations", content=rows.to_csv(index=False), headers={"content-type": "text/csv"}
        )
    else:
        payload = {
            "dataframe_split": {"columns": list(rows.columns), "data": [list(r.values()) for r in recs]},
            "dataframe_records": recs,
            "instances": recs,
            "inputs": {c: [r[c] for r in recs] for c in rows.columns},
        }[fmt]
        response = _post(client, {fmt: payload})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": _expected(served_model, rows)}


def test_invocations_ignores_params_and_extra_columns(client: TestClient, test_rows: pd.DataFrame) -> None:
    recs = [{**r, "unused": 1} for r in records(test_rows.head(3))]
    response = _post(client, {"dataframe_records": recs, "params": {"a": 1}})
    assert response.status_code == 200 and len(response.json()["predictions"]) == 3


def test_optional_column_may_be_left_out(client: TestClient, test_rows: pd.DataFrame) -> None:
    recs = [{k: v for k, v in r.items() if k != "sex"} for r in records(test_rows.head(2))]
    assert _post(client, {"dataframe_records": recs}).status_code == 200


def test_predict_returns_labels_and_probabilities(
    client: TestClient, served_model: ServedModel, test_rows: pd.DataFrame
) -> None:
    rows = test_rows.head(10)
    response = _post(client, {"records": records(rows)}, "/predict")
    assert response.status_code == 200, response.text
    body = response.json()
    proba = served_model.pipeline.predict_proba(rows)
    assert body["model_version"] == served_model.version
    for pred, expected_p, expected_label in zip(body["predictions"], proba, _expected(served_model, rows)):
        assert list(pred["probabilities"]) == served_model.info["classes"]
        assert np.allclose(list(pred["probabilities"].values()), expected_p)
        assert pred["label"] == expected_label


def test_openapi_documents_predict_with_an_example(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["examples"]["penguins"]["value"]["records"]
    row = spec["components"]["schemas"]["PredictRow"]
    assert "island" in row["required"] and "bill_length_mm" in row["properties"]


BAD_INVOCATIONS = [
    ("not json", JSON, "not valid JSON"),
    (json.dumps([1, 2]), JSON, "JSON object"),
    (json.dumps({"data": []}), JSON, "exactly one of the keys"),
    (json.dumps({"inputs": {}, "instances": []}), JSON, "exactly one of the keys"),
    (json.dumps({"dataframe_records": []}), JSON, "no rows"),
    (json.dumps({"dataframe_records": [{"bill_length_mm": 40.0}]}), JSON, "'island' is required"),
    (json.dumps({"dataframe_records": [{"island": 3}]}), JSON, "column 'island' expects a string"),
    (
        json.dumps({"dataframe_records": [{"island": "Dream", "bill_length_mm": "long"}]}),
        JSON,
        "'bill_length_mm'",
    ),
    (json.dumps({"dataframe_records": [{"island": "Dream", "body_mass_g": True}]}), JSON, "'body_mass_g'"),
    (json.dumps({"dataframe_records": [1]}), JSON, "dataframe_records[0]"),
    (
        json.dumps({"dataframe_split": {"columns": ["island"], "data": [["a", 1]]}}),
        JSON,
        "dataframe_split.data[0]",
    ),
    (json.dumps({"dataframe_split": {"data": []}}), JSON, "dataframe_split must be an object"),
    (json.dumps({"inputs": {"island": ["a"], "sex": ["male", "female"]}}), JSON, "same number of values"),
    (json.dumps({"inputs": {"island": "Dream"}}), JSON, "inputs.island must be a list"),
    (
        "island,bill_length_mm\nDream,abc\n",
        {"content-type": "text/csv"},
        "column 'bill_length_mm' expects double",
    ),
    ("island,bill_length_mm\nDream\n", {"content-type": "text/csv"}, "CSV row 1"),
    ("", {"content-type": "text/csv"}, "header row"),
    (b"\xff\xfe", {"content-type": "text/csv"}, "not UTF-8"),
]


@pytest.mark.parametrize("body,headers,message", BAD_INVOCATIONS)
def test_bad_invocations_get_400_naming_the_problem(
    client: TestClient, body: str | bytes, headers: dict[str, str], message: str
) -> None:
    response = client.post("/invocations", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "BAD_REQUEST"
    assert message in response.json()["message"]


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/json; charset=latin-1", "application/xml", ""]
)
def test_unsupported_content_type_is_415(client: TestClient, content_type: str) -> None:
    response = client.post("/invocations", content=b"{}", headers={"content-type": content_type})
    assert response.status_code == 415


@pytest.mark.parametrize(
    "payload,field",
    [
        ({"records": [{"bill_length_mm": 40.0}]}, "records.0.island"),
        ({"records": [{"island": "Dream", "bill_length_mm": "40"}]}, "records.0.bill_length_mm"),
        ({"records": [{"island": "Dream", "wings": 2}]}, "records.0.wings"),
        ({"records": [{"island": "Dream", "body_mass_g": 1e39}]}, "records.0.body_mass_g"),
        ({"records": []}, "records"),
        ({"rows": []}, "records"),
    ],
)
def test_bad_predict_gets_422_naming_the_field(
    client: TestClient, payload: dict[str, Any], field: str
) -> None:
    response = _post(client, payload, "/predict")
    assert response.status_code == 422
    assert (
        response.json()["error_code"] == "BAD_REQUEST" and field in response.json()["message"]
    ), response.text


@pytest.mark.parametrize("body", [b"{nope", b"", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000])
def test_unparseable_predict_body_is_400(client: TestClient, body: bytes) -> None:
    response = client.post("/predict", content=body, headers=JSON)
    assert response.status_code == 400 and response.json()["error_code"] == "BAD_REQUEST", response.text


@pytest.mark.parametrize("path", ["/invocations", "/predict"])
@pytest.mark.parametrize("opening,closing", [(b"[", b"]"), (b'{"a":', b"}")])
def test_json_nested_100000_deep_is_400(
    client: TestClient, path: str, opening: bytes, closing: bytes
) -> None:
    deep = opening * 100_000 + b"1" + closing * 100_000
    for body in (deep, b'{"dataframe_records": ' + deep + b"}", b'{"records": [{"island": ' + deep + b"}]}"):
        response = client.post(path, content=body, headers=JSON)
        assert response.status_code == 400, (path, response.status_code, response.text[:200])
        assert set(response.json()) == {"error_code", "message"}


def test_json_nested_just_under_the_parser_limit_is_400_not_500(served_model: ServedModel) -> None:
    with TestClient(create_app(ServingSettings(), served_model), raise_server_exceptions=False) as c:
        for depth in (100, 500, 900, 990, 1500):
            value = "[" * depth + "]" * depth
            body = '{"dataframe_records": [{"island": %s}]}' % value
            assert c.post("/invocations", content=body, headers=JSON).status_code == 400, depth


def test_numbers_beyond_float32_are_400(client: TestClient) -> None:
    for value in ("1e39", "-1e300", "1e400", str(10**400)):
        body = '{"dataframe_records": [{"island": "Dream", "body_mass_g": %s}]}' % value
        response = client.post("/invocations", content=body, headers=JSON)
        assert response.status_code == 400 and "'body_mass_g'" in response.json()["message"], value


def test_every_error_has_the_protocols_one_shape(served_model: ServedModel) -> None:
    with TestClient(create_app(ServingSettings(max_body_bytes=2000), served_model)) as c:
        answers = [
            c.get("/nope"),
            c.delete("/predict"),
            c.post("/invocations", content=b"x" * 3000, headers=JSON),
            c.post("/invocations", content=b"{}", headers={"content-type": "text/plain"}),
            c.post("/predict", content=b"{}", headers={"content-type": "text/plain"}),
            c.post("/predict", content=b"{nope", headers=JSON),
            c.post("/invocations", content=b"{nope", headers=JSON),
            c.post("/predict", content=b'{"records": []}', headers=JSON),
        ]
    with TestClient(create_app(ServingSettings(timeout_seconds=1e-9), served_model)) as c:
        answers.append(_post(c, {"dataframe_records": [{"island": "Dream"}]}))
    assert [a.status_code for a in answers] == [404, 405, 413, 415, 415, 400, 400, 422, 503]
    for answer in answers:
        body = answer.json()
        assert set(body) == {"error_code", "message"} and all(isinstance(v, str) for v in body.values())
    assert answers[1].headers["allow"] == "POST"


def test_an_unexpected_error_is_a_500_without_details(
    served_model: ServedModel, test_rows: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(ServingSettings(), served_model)
    with TestClient(app, raise_server_exceptions=False) as c:

        def broken(_X: Any) -> list[Any]:
            raise RuntimeError(f"secret detail in {served_model.info['signature']}")

        monkeypatch.setattr(served_model, "predict", broken)
        response = _post(c, {"dataframe_records": records(test_rows.head(2))})
    assert response.status_code == 500
    body = response.json()
    assert body["error_code"] == "INTERNAL_ERROR" and response.headers["x-request-id"] in body["message"]
    assert "secret" not in response.text and "Traceback" not in response.text


def test_docs_can_be_turned_off(served_model: ServedModel) -> None:
    with TestClient(create_app(ServingSettings(docs=False), served_model)) as c:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert c.get(path).status_code == 404
        assert c.get("/ready").status_code == 200
    with TestClient(create_app(ServingSettings(), served_model)) as c:
        assert c.get("/docs").status_code == 200 and c.get("/openapi.json").status_code == 200


def test_docs_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGATE_SERVE_DOCS", "false")
    assert ServingSettings().docs is False


def test_metadata_never_shows_server_paths(model_copy: Any) -> None:
    (model_copy / "mlgate_bundle.json").unlink(missing_ok=True)
    from mlgate.serving.model import load_served_model

    with TestClient(create_app(ServingSettings(), load_served_model(model_copy))) as c:
        meta = c.get("/metadata").text
    assert meta and str(model_copy) not in meta and str(model_copy.parent) not in meta
    assert json.loads(meta)["source"] is None


def test_openapi_csv_schema_refuses_what_the_server_refuses(
    client: TestClient, test_rows: pd.DataFrame
) -> None:
    import jsonschema

    spec = client.get("/openapi.json").json()
    schema = spec["paths"]["/invocations"]["post"]["requestBody"]["content"]["text/csv"]["schema"]
    valid = test_rows.head(3).to_csv(index=False)
    for body in ("", "\n", ",".join(test_rows.columns) + "\n", "island\nDream\n" + "x" * 3):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(body, schema)
    jsonschema.validate(valid.replace(".0,", ","), schema)
    assert client.post("/invocations", content=b"", headers={"content-type": "text/csv"}).status_code == 400


def test_body_over_the_limit_is_413(served_model: ServedModel, test_rows: pd.DataFrame) -> None:
    app = create_app(ServingSettings(max_body_bytes=300), served_model)
    body = json.dumps({"dataframe_records": records(test_rows.head(20))}).encode()
    with TestClient(app) as c:
        assert c.post("/invocations", content=body, headers=JSON).status_code == 413

        def chunks():  # no content-length: the limit applies while reading
            yield body[:200]
            yield body[200:]

        assert c.post("/invocations", content=chunks(), headers=JSON).status_code == 413
        assert c.post("/invocations", content=body[:250], headers=JSON).status_code == 400


def test_too_many_rows_is_413(served_model: ServedModel, test_rows: pd.DataFrame) -> None:
    with TestClient(create_app(ServingSettings(max_rows=5), served_model)) as c:
        assert _post(c, {"dataframe_records": records(test_rows.head(6))}).status_code == 413
        assert _post(c, {"records": records(test_rows.head(6))}, "/predict").status_code == 422


def test_request_that_waited_past_the_timeout_is_503(
    served_model: ServedModel, test_rows: pd.DataFrame
) -> None:
    with TestClient(create_app(ServingSettings(timeout_seconds=1e-9), served_model)) as c:
        response = _post(c, {"dataframe_records": records(test_rows.head(2))})
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert _post(c, {"records": records(test_rows.head(2))}, "/predict").status_code == 503


def test_prediction_past_the_timeout_is_504(
    served_model: ServedModel, test_rows: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request whose prediction runs past the timeout gets 504 (one that waited past it before its turn,
    503: above). The prediction is the real one; the clock the service reads after it is 1 s on, as after a
    slow prediction, so that the outcome does not hang on this machine's speed (8,000 rows against 50 ms
    passed under load and failed on a quiet machine)."""
    reads = []

    def clock() -> float:
        reads.append(time.perf_counter())
        return reads[-1] + (1.0 if len(reads) > 1 else 0.0)  # the check before the prediction, then after

    monkeypatch.setattr(service_module, "time", types.SimpleNamespace(perf_counter=clock))
    body = json.dumps({"dataframe_records": records(test_rows.head(50))})
    with TestClient(create_app(ServingSettings(timeout_seconds=0.5), served_model)) as c:
        response = c.post("/invocations", content=body, headers=JSON)
    assert response.status_code == 504, response.text
    assert response.json()["message"] == "the prediction took longer than the timeout" and len(reads) == 2


def test_metrics_count_requests_and_classes(
    client: TestClient, served_model: ServedModel, test_rows: pd.DataFrame
) -> None:
    rows = test_rows.head(12)
    _post(client, {"dataframe_records": records(rows)})
    client.post("/invocations", content=b"nope", headers=JSON)
    text = client.get("/metrics").text
    version = served_model.version
    assert (
        "mlgate_http_requests_total{"
        f'method="POST",model_version="{version}",route="/invocations",status="200"}} 1.0' in text
    )
    assert 'route="/invocations",status="400"' in text
    assert "mlgate_http_request_duration_seconds_bucket" in text
    for label, n in pd.Series(_expected(served_model, rows)).value_counts().items():
        assert f'mlgate_predictions_total{{class="{label}",model_version="{version}"}} {float(n)}' in text
    assert f'mlgate_model_info{{alias="",name="{served_model.info["name"]}"' in text


def test_request_id_is_echoed_and_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mlgate.serving.access"):
        response = client.get("/health", headers={"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    entry = next(r for r in caplog.records if r.name == "mlgate.serving.access")
    assert (entry.request_id, entry.status, entry.path) == ("abc-123", 200, "/health")
    assert len(client.get("/health").headers["x-request-id"]) == 32


def test_the_fast_invocations_path_answers_as_the_fastapi_route(
    served_model: ServedModel, test_rows: pd.DataFrame
) -> None:
    """POST /invocations skips FastAPI's routing (ServingApp); with it turned off the route answers: the same
    status, body and headers for good, bad, unsupported and oversized requests, and the same metrics."""
    recs = records(test_rows.head(3))
    bodies = [
        (json.dumps({"dataframe_records": recs}), JSON),
        (test_rows.head(3).to_csv(index=False), {"content-type": "text/csv"}),
        (json.dumps({"dataframe_records": [{**recs[0], "bill_length_mm": "long"}]}), JSON),
        ("{not json", JSON),
        ("a,b\n1,2\n", {"content-type": "text/plain"}),
        (json.dumps({"dataframe_records": recs * 400}), JSON),  # over max_body_bytes below
    ]
    answers = []
    for fast in (True, False):
        app = create_app(ServingSettings(max_body_bytes=50_000), served_model)
        if not fast:
            app.fast_invocations = None
        with TestClient(app) as client:
            got = []
            for body, headers in bodies:
                r = client.post("/invocations", content=body, headers={**headers, "x-request-id": "same"})
                got.append((r.status_code, r.content, {k: v for k, v in r.headers.items() if k != "date"}))
            metrics = client.get("/metrics").text
        answers.append(
            (got, [line for line in metrics.splitlines() if line.startswith("mlgate_http_requests_total")])
        )
    assert [status for status, _, _ in answers[0][0]] == [200, 200, 400, 400, 415, 413]
    assert answers[0] == answers[1]

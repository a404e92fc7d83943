"""The Open Inference Protocol (V2) beside /invocations: health, metadata, infer with named tensors, bad
tensors refused with 4xx in the V2 error shape; and Triton's own client (tritonclient[http]) against the
real server process, getting the same predictions as /invocations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlgate.serving.app import create_app
from mlgate.serving.model import ServedModel
from mlgate.serving.settings import ServingSettings
from tests.serving.conftest import mlgate_serve, records

DATATYPES = {"string": "BYTES", "double": "FP64"}


def tensors(served_model: ServedModel, rows: pd.DataFrame) -> list[dict[str, Any]]:
    """One JSON tensor per signature column; missing values as null."""
    recs = records(rows)
    return [
        {
            "name": c.name,
            "datatype": DATATYPES[c.type],
            "shape": [len(recs)],
            "data": [r[c.name] for r in recs],
        }
        for c in served_model.columns
    ]


def infer_url(served_model: ServedModel) -> str:
    return f"/v2/models/{served_model.info['name']}/infer"


def test_server_and_model_health_and_metadata(client: TestClient, served_model: ServedModel) -> None:
    name, version = served_model.info["name"], served_model.version
    assert client.get("/v2").json()["name"] == "mlgate"
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    for prefix in (f"/v2/models/{name}", f"/v2/models/{name}/versions/{version}"):
        meta = client.get(prefix).json()
        assert meta["name"] == name and meta["versions"] == [version]
        assert [i["name"] for i in meta["inputs"]] == [c.name for c in served_model.columns]
        assert {i["datatype"] for i in meta["inputs"]} == {"BYTES", "FP64"}
        assert meta["outputs"] == [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(served_model.classes)]},
        ]
        assert client.get(f"{prefix}/ready").json() == {"name": name, "ready": True}
    for missing in ("/v2/models/other", f"/v2/models/{name}/versions/999/ready", "/v2/models/other/ready"):
        response = client.get(missing)
        assert response.status_code == 404 and set(response.json()) == {"error"}


def test_not_ready_before_start_up(served_model: ServedModel) -> None:
    c = TestClient(create_app(ServingSettings(), served_model))  # no `with`: the lifespan has not run
    for path in ("/v2/health/ready", f"/v2/models/{served_model.info['name']}/ready"):
        response = c.get(path)
        assert response.status_code == 503 and set(response.json()) == {"error"}
    assert c.get("/v2/health/live").status_code == 200


def test_infer_gives_the_predictions_of_invocations_and_predict(
    client: TestClient, served_model: ServedModel, test_rows: pd.DataFrame
) -> None:
    rows = test_rows.head(30)
    assert rows.isna().any().any(), "the held-out rows should include missing values"
    response = client.post(
        infer_url(served_model), json={"id": "req-7", "inputs": tensors(served_model, rows)}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == (
        served_model.info["name"],
        served_model.version,
        "req-7",
    )
    label, proba = body["outputs"]
    expected = client.post("/invocations", json={"dataframe_records": records(rows)}).json()["predictions"]
    assert label == {"name": "label", "datatype": "BYTES", "shape": [30], "data": expected}
    typed = client.post("/predict", json={"records": records(rows)}).json()["predictions"]
    assert proba["shape"] == [30, len(served_model.classes)]
    assert np.allclose(proba["data"], [p for t in typed for p in t["probabilities"].values()])
    assert response.headers["x-model-version"] == served_model.version


def test_infer_returns_the_outputs_asked_for_and_takes_versions_and_shapes(
    client: TestClient, served_model: ServedModel, test_rows: pd.DataFrame
) -> None:
    inputs = tensors(served_model, test_rows.head(3))
    for t in inputs:
        t["shape"] = [3, 1]
        t["data"] = [[v] for v in t["data"]]
    url = f"/v2/models/{served_model.info['name']}/versions/{served_model.version}/infer"
    response = client.post(url, json={"inputs": inputs, "outputs": [{"name": "probabilities"}]})
    assert response.status_code == 200, response.text
    assert [o["name"] for o in response.json()["outputs"]] == ["probabilities"]
    optional_left_out = [t for t in inputs if t["name"] != "sex"]
    assert client.post(url, json={"inputs": optional_left_out}).status_code == 200


def _bad_tensors(served_model: ServedModel, rows: pd.DataFrame) -> list[tuple[str, Any, int, str]]:
    good = tensors(served_model, rows.head(2))

    def changed(name: str, **fields: Any) -> dict[str, Any]:
        return {"inputs": [{**t, **fields} if t["name"] == name else t for t in good]}

    return [
        ("not json", b"{nope", 400, "not valid JSON"),
        ("deep", b"[" * 100_000 + b"]" * 100_000, 400, "not valid JSON"),
        ("deep inside", b'{"inputs": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}", 400, "not valid JSON"),
        ("no inputs", {"outputs": []}, 400, '"inputs"'),
        ("empty inputs", {"inputs": []}, 400, '"inputs"'),
        ("unknown input", {"inputs": [*good, {**good[0], "name": "wings"}]}, 400, "'wings' is not an input"),
        ("twice", {"inputs": [*good, good[0]]}, 400, "given twice"),
        ("datatype", changed("island", datatype="FP64"), 400, "datatype 'FP64'"),
        ("unknown datatype", changed("bill_length_mm", datatype="FP128"), 400, "datatype 'FP128'"),
        ("shape", changed("island", shape=[3]), 400, "its shape says 3"),
        ("2-d shape", changed("island", shape=[1, 2]), 400, "[N] or [N, 1]"),
        ("negative shape", changed("island", shape=[-2]), 400, "non-negative"),
        ("rows differ", changed("island", shape=[1], data=["Dream"]), 400, "same number of rows"),
        ("wrong element", changed("bill_length_mm", data=["a", 1.0]), 400, "not FP64"),
        ("too large", changed("body_mass_g", data=[1e39, 1.0]), 400, "'body_mass_g'"),
        ("no data", {"inputs": [{k: v for k, v in good[0].items() if k != "data"}]}, 400, "no data"),
        ("binary overrun", changed("island", parameters={"binary_data_size": 99}), 400, "binary_data_size"),
        ("missing required", {"inputs": good[1:]}, 400, "'island' is required"),
        (
            "unknown output",
            {"inputs": good, "outputs": [{"name": "logits"}]},
            400,
            "not outputs of the model",
        ),
        ("id type", {"inputs": good, "id": 5}, 400, "id must be a string"),
        ("zero rows", {"inputs": [{**t, "shape": [0], "data": []} for t in good]}, 400, "no rows"),
    ]


def test_bad_tensors_get_4xx_in_the_v2_error_shape(
    client: TestClient, served_model: ServedModel, test_rows: pd.DataFrame
) -> None:
    for case, body, status, message in _bad_tensors(served_model, test_rows):
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = client.post(infer_url(served_model), content=content)
        assert response.status_code == status, (case, response.text[:300])
        assert set(response.json()) == {"error"} and message in response.json()["error"], (
            case,
            response.text,
        )
    wrong_model = client.post(
        "/v2/models/other/infer", json={"inputs": tensors(served_model, test_rows.head(1))}
    )
    assert wrong_model.status_code == 404 and set(wrong_model.json()) == {"error"}
    assert client.get(infer_url(served_model)).status_code == 405
    assert set(client.get(infer_url(served_model)).json()) == {"error"}


def test_too_many_rows_is_413_in_the_v2_shape(served_model: ServedModel, test_rows: pd.DataFrame) -> None:
    with TestClient(create_app(ServingSettings(max_rows=2), served_model)) as c:
        response = c.post(infer_url(served_model), json={"inputs": tensors(served_model, test_rows.head(3))})
    assert response.status_code == 413 and set(response.json()) == {"error"}


_values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5))
_tensor = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["island", "bill_length_mm", "sex", "body_mass_g", "x"]),
        "datatype": st.sampled_from(["BYTES", "FP64", "FP32", "INT64", "BOOL", "nope"]),
        "shape": st.lists(st.integers(-1, 3), min_size=0, max_size=3),
        "data": st.lists(st.one_of(_values, st.lists(_values, max_size=2)), max_size=4),
    },
    optional={"parameters": st.dictionaries(st.sampled_from(["binary_data_size", "x"]), st.integers(-1, 9))},
)
_body = st.fixed_dictionaries(
    {"inputs": st.lists(_tensor, max_size=4)},
    optional={
        "id": st.one_of(st.text(max_size=3), st.integers()),
        "outputs": st.lists(
            st.fixed_dictionaries({"name": st.sampled_from(["label", "probabilities", "z"])}), max_size=2
        ),
    },
)


def test_fuzzed_infer_requests_never_get_a_server_error(served_model: ServedModel) -> None:
    with TestClient(create_app(ServingSettings(), served_model)) as c:

        @given(body=_body, binary=st.binary(max_size=16), header=st.one_of(st.none(), st.integers(-2, 400)))
        @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(body: dict[str, Any], binary: bytes, header: int | None) -> None:
            content = json.dumps(body).encode()
            headers = {}
            if header is not None:
                headers["inference-header-content-length"] = str(min(header, len(content)))
                content += binary
            response = c.post(infer_url(served_model), content=content, headers=headers)
            assert response.status_code < 500, response.text
            if response.status_code != 200:
                assert set(response.json()) == {"error"}

        check()


@pytest.mark.slow
def test_tritonclient_gets_the_predictions_of_invocations(
    trained_model: dict[str, Any], served_model: ServedModel, test_rows: pd.DataFrame, tmp_path: Path
) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    rows = test_rows.head(40)
    name = served_model.info["name"]
    with mlgate_serve(["--model", str(trained_model["model_dir"])], tmp_path / "server.log") as server:
        expected = httpx.post(
            f"{server['url']}/invocations", json={"dataframe_records": records(rows)}
        ).json()["predictions"]
        typed = httpx.post(f"{server['url']}/predict", json={"records": records(rows)}).json()["predictions"]
        client = triton.InferenceServerClient(url=f"127.0.0.1:{server['port']}")
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(name)
        assert client.get_server_metadata()["name"] == "mlgate"
        meta = client.get_model_metadata(name)
        assert meta["versions"] == [served_model.version]
        for binary in (True, False):
            inputs = []
            for spec in meta["inputs"]:
                column = rows[spec["name"]]
                if spec["datatype"] == "BYTES":  # the empty string is a missing value
                    data = np.array(["" if pd.isna(v) else v for v in column], dtype=object)
                else:  # NaN is a missing value (in JSON, the client writes it as the NaN literal)
                    data = column.to_numpy(dtype=np.float64)
                tensor = triton.InferInput(spec["name"], [len(rows)], spec["datatype"])
                tensor.set_data_from_numpy(data, binary_data=binary)
                inputs.append(tensor)
            outputs = [triton.InferRequestedOutput("label"), triton.InferRequestedOutput("probabilities")]
            result = client.infer(name, inputs, outputs=outputs, request_id=f"binary-{binary}")
            assert result.get_response()["model_version"] == served_model.version
            assert result.as_numpy("label").tolist() == expected, f"binary_data={binary}"
            proba = result.as_numpy("probabilities")
            assert proba.shape == (len(rows), len(served_model.classes))
            assert np.allclose(proba, [list(t["probabilities"].values()) for t in typed])
        bad = triton.InferInput("island", [1], "FP64")
        bad.set_data_from_numpy(np.array([1.0]))
        with pytest.raises(InferenceServerException) as refused:
            client.infer(name, [bad])
        assert refused.value.status() == "400" and "island" in refused.value.message()
        client.close()

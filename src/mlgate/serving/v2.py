"""The Open Inference Protocol (KServe V2, Triton's HTTP API) beside MLflow's: server and model health and
metadata, and ``infer`` with one named input tensor per signature column (JSON data, or Triton's binary tensor
extension for inputs) and two outputs, ``label`` and ``probabilities``. Missing values: null in JSON data,
NaN in floating-point tensors, the empty string in BYTES tensors. Errors are ``{"error": message}``."""

from __future__ import annotations

import functools
import json
import struct
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response

from mlgate.serving.errors import error, json_response, show
from mlgate.serving.model import Column, InputError, ServedModel
from mlgate.serving.protocol import SMALL_BODY
from mlgate.serving.reader import Limits, TooLarge, read_infer
from mlgate.serving.service import Service

PREFIX = "/v2"
HEADER_LENGTH = "inference-header-content-length"
OUTPUTS = ("label", "probabilities")
FLOATS = {"FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}
INTEGERS = {f"INT{n}": f"<i{n // 8}" for n in (8, 16, 32, 64)} | {
    f"UINT{n}": f"<u{n // 8}" for n in (8, 16, 32, 64)
}
# The tensor datatypes each signature type accepts; the first one is what metadata advertises.
ACCEPTED = {
    "string": ("BYTES",),
    "double": ("FP64", *FLOATS, *INTEGERS),
    "float": ("FP32", *FLOATS, *INTEGERS),
    "long": ("INT64", *INTEGERS),
    "integer": ("INT32", *INTEGERS),
    "boolean": ("BOOL",),
}


class V2Error(InputError):
    """A request the protocol refuses; ``status`` is its HTTP status (4xx)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class InferRequest:
    """A parsed infer request: named columns, the row count, the request id and the outputs asked for."""

    columns: dict[str, list[Any]]
    n_rows: int
    request_id: str | None
    outputs: tuple[str, ...]


def model_name(model: ServedModel) -> str:
    """The name V2 clients address the model by."""
    return str(model.info.get("name") or "model")


def server_metadata() -> dict[str, Any]:
    """``GET /v2``."""
    return {"name": "mlgate", "version": importlib_metadata.version("mlgate"), "extensions": []}


def _label_datatype(model: ServedModel) -> str:
    if model.is_regressor:
        return "FP64"
    kinds = {type(c) for c in model.classes}
    if kinds <= {str}:
        return "BYTES"
    if kinds <= {bool}:
        return "BOOL"
    return "INT64" if kinds <= {int} else "FP64"


def model_outputs(model: ServedModel) -> tuple[str, ...]:
    """The outputs of ``model``: a regressor's label is its value, and it has no probabilities."""
    return OUTPUTS[:1] if model.is_regressor else OUTPUTS


def model_metadata(model: ServedModel) -> dict[str, Any]:
    """``GET /v2/models/{name}``: inputs per signature column, the label and probability outputs (a
    regressor: the label only, its predicted value)."""
    return {
        "name": model_name(model),
        "versions": [model.version],
        "platform": "scikit-learn",
        "inputs": [{"name": c.name, "datatype": ACCEPTED[c.type][0], "shape": [-1]} for c in model.columns],
        "outputs": [
            {"name": "label", "datatype": _label_datatype(model), "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(model.classes)]},
        ][: len(model_outputs(model))],
    }


def _flatten(data: Any, where: str) -> list[Any]:
    if not isinstance(data, list):
        raise V2Error(f"{where}.data must be an array")
    if any(isinstance(v, list) for v in data):
        flat: list[Any] = []
        for v in data:
            flat.extend(_flatten(v, where) if isinstance(v, list) else [v])
        return flat
    return data


def _from_binary(raw: bytes, datatype: str, count: int, where: str) -> list[Any]:
    if datatype == "BYTES":
        values, offset = [], 0
        for _ in range(count):
            if offset + 4 > len(raw):
                raise V2Error(f"{where}: binary BYTES data ends early")
            (length,) = struct.unpack_from("<I", raw, offset)
            chunk = raw[offset + 4 : offset + 4 + length]
            if len(chunk) != length:
                raise V2Error(f"{where}: binary BYTES data ends early")
            try:
                values.append(chunk.decode("utf-8"))
            except UnicodeDecodeError:
                raise V2Error(f"{where}: a BYTES element is not UTF-8") from None
            offset += 4 + length
        if offset != len(raw):
            raise V2Error(f"{where}: binary_data_size does not match {count} BYTES elements")
        return values
    dtype = np.dtype("?" if datatype == "BOOL" else FLOATS.get(datatype) or INTEGERS[datatype])
    if len(raw) != count * dtype.itemsize:
        raise V2Error(
            f"{where}: binary_data_size is {len(raw)}, {count} {datatype} need {count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype).tolist()


def _check_json_values(values: list[Any], datatype: str, where: str) -> None:
    if datatype == "BYTES":
        expected: tuple[type, ...] = (str,)
    elif datatype == "BOOL":
        expected = (bool,)
    elif datatype in INTEGERS:
        expected = (int,)
    else:
        expected = (int, float)
    for i, v in enumerate(values):
        if v is not None and (type(v) not in expected):
            raise V2Error(f"{where}: element {i} is {show(v)}, not {datatype}")
        if v is None and datatype in ("BOOL", *INTEGERS):
            raise V2Error(f"{where}: element {i} is null; {datatype} has no missing value")


def _shape_rows(shape: Any, where: str, limits: Limits) -> int:
    if not (isinstance(shape, list) and shape and all(type(d) is int and d >= 0 for d in shape)):
        raise V2Error(f"{where}.shape must be a non-empty array of non-negative integers")
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise V2Error(f"{where}.shape must be [N] or [N, 1] (one value per row), got {show(shape)}")
    if shape[0] > limits.rows:
        raise V2Error(str(limits.too_many("rows")), 413)
    return shape[0]


def _load_head(head: bytes, limits: Limits) -> Any:
    try:
        if len(head) > SMALL_BODY:
            return read_infer(head, limits)
        return json.loads(head)
    except TooLarge as exc:
        raise V2Error(str(exc), 413) from None
    except InputError as exc:
        raise V2Error(str(exc)) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise V2Error(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise V2Error("the body is not valid JSON: nested too deeply") from None


def parse_infer(
    body: bytes,
    header_length: str | None,
    columns: list[Column],
    model_outputs: tuple[str, ...] = OUTPUTS,
    limits: Limits | None = None,
) -> InferRequest:
    """An infer request body (JSON, or JSON then binary tensors) as named columns; the outputs asked for
    (default: all of ``model_outputs``). Tensors and their elements are counted while the JSON is read
    (past ``limits``: 413).

    Raises:
        V2Error: the body, a tensor's name, datatype, shape or data is not what the model takes, or it is
            over ``limits`` (status 413).
    """
    limits = limits or Limits(rows=2**62, columns=2**62)
    head, binary = body, b""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise V2Error("Inference-Header-Content-Length must be an integer") from None
        if not 0 <= length <= len(body):
            raise V2Error("Inference-Header-Content-Length is larger than the body")
        head, binary = body[:length], body[length:]
    request = _load_head(head, limits)
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise V2Error('the body must be an object with "inputs": a non-empty array of tensors')
    if len(request["inputs"]) > limits.columns:
        raise V2Error(str(limits.too_many("columns")), 413)
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise V2Error("id must be a string")
    for key in ("parameters",):
        if not isinstance(request.get(key, {}), dict):
            raise V2Error(f"{key} must be an object")
    by_name = {c.name: c for c in columns}
    parsed: dict[str, list[Any]] = {}
    rows: set[int] = set()
    offset = 0
    for i, tensor in enumerate(request["inputs"]):
        where = f"inputs[{i}]"
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise V2Error(f"{where} must be an object with a name")
        name = tensor["name"]
        where = f"input {show(name)}"
        col = by_name.get(name)
        if col is None:
            raise V2Error(f"{where} is not an input of the model; its inputs are {list(by_name)}")
        if name in parsed:
            raise V2Error(f"{where} is given twice")
        datatype = tensor.get("datatype")
        if datatype not in ACCEPTED[col.type]:
            raise V2Error(
                f"{where} has datatype {show(datatype)}; column {name!r} ({col.type}) takes "
                f"{ACCEPTED[col.type]}"
            )
        n = _shape_rows(tensor.get("shape"), where, limits)
        parameters = tensor.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise V2Error(f"{where}.parameters must be an object")
        size = parameters.get("binary_data_size")
        if size is not None:
            if "data" in tensor or type(size) is not int or size < 0 or offset + size > len(binary):
                raise V2Error(f"{where}: binary_data_size does not fit the binary part of the body")
            values = _from_binary(binary[offset : offset + size], datatype, n, where)
            offset += size
        else:
            if "data" not in tensor:
                raise V2Error(f"{where} has no data")
            values = _flatten(tensor["data"], where)
            _check_json_values(values, datatype, where)
        if len(values) != n:
            raise V2Error(f"{where} has {len(values)} elements, its shape says {n}")
        if datatype == "BYTES":  # as in CSV: an empty string is a missing value
            values = [None if v == "" else v for v in values]
        parsed[name] = values
        rows.add(n)
    if offset != len(binary):
        raise V2Error("the binary part of the body is longer than the tensors' binary_data_size")
    if len(rows) > 1:
        raise V2Error(f"every input must have the same number of rows, got {sorted(rows)}")
    outputs = request.get("outputs")
    if outputs is None:
        wanted: tuple[str, ...] = model_outputs
    else:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
            raise V2Error("outputs must be an array of objects with a name")
        wanted = tuple(o.get("name") for o in outputs)  # type: ignore[misc]
        unknown = [o for o in wanted if o not in model_outputs]
        if unknown or not wanted:
            raise V2Error(
                f"outputs {show(unknown)} are not outputs of the model; its outputs are {list(model_outputs)}"
            )
    return InferRequest(parsed, rows.pop(), request_id, wanted)


def infer_response(
    model: ServedModel, request: InferRequest, labels: list[Any], proba: np.ndarray
) -> dict[str, Any]:
    """The infer response: the outputs asked for, with the version that computed them."""
    outputs = []
    n = len(labels)
    for name in request.outputs:
        if name == "label":
            outputs.append(
                {"name": "label", "datatype": _label_datatype(model), "shape": [n], "data": labels}
            )
        else:
            outputs.append(
                {
                    "name": "probabilities",
                    "datatype": "FP64",
                    "shape": [n, proba.shape[1]],
                    "data": proba.ravel().tolist(),
                }
            )
    response: dict[str, Any] = {
        "model_name": model_name(model),
        "model_version": model.version,
        "outputs": outputs,
    }
    if request.request_id is not None:
        response["id"] = request.request_id
    return response


def add_v2_routes(app: FastAPI, service: Service) -> None:
    """The protocol's routes on ``app`` (left out of /openapi.json: the protocol publishes its own)."""
    route = functools.partial(app.api_route, include_in_schema=False)

    def addressed(name: str, version: str | None) -> ServedModel:
        served = service.model
        if name != model_name(served) or version not in (None, served.version):
            raise V2Error(f"model {show(name)} version {show(version)} is not served here", 404)
        return served

    @route(PREFIX, methods=["GET"])
    async def server() -> Response:
        return json_response(200, server_metadata())

    @route(f"{PREFIX}/health/live", methods=["GET"])
    async def live() -> Response:
        return json_response(200, {"live": True})

    @route(f"{PREFIX}/health/ready", methods=["GET"])
    async def ready() -> Response:
        if not service.ready:
            return error(503, "the model is not loaded yet", PREFIX)
        return json_response(200, {"ready": True})

    async def model_meta(name: str, version: str | None = None) -> Response:
        try:
            return json_response(200, model_metadata(addressed(name, version)))
        except V2Error as exc:
            return error(exc.status, str(exc), PREFIX)

    async def model_ready(name: str, version: str | None = None) -> Response:
        try:
            served = addressed(name, version)
        except V2Error as exc:
            return error(exc.status, str(exc), PREFIX)
        if not service.ready:
            return error(503, "the model is not loaded yet", PREFIX)
        return json_response(200, {"name": model_name(served), "ready": True})

    async def infer(request: Request, name: str, version: str | None = None) -> Response:
        body = await request.body()
        header_length = request.headers.get(HEADER_LENGTH)
        try:
            served = addressed(name, version)
        except V2Error as exc:
            return error(exc.status, str(exc), PREFIX)
        service.served_by(request.scope, served)

        def score() -> tuple[InferRequest, list[Any], np.ndarray]:
            parsed = parse_infer(body, header_length, served.columns, model_outputs(served), service.limits)
            return parsed, *served.predict_proba(served.frame(parsed.columns, parsed.n_rows))

        try:
            scored = await service.score(request.scope, len(body), score)
        except V2Error as exc:
            return error(exc.status, str(exc), PREFIX)
        except InputError as exc:
            return error(400, str(exc), PREFIX)
        except (ValueError, TypeError, KeyError) as exc:
            return error(400, f"the model could not score this input: {exc}", PREFIX)
        if isinstance(scored, Response):
            return scored
        parsed, labels, proba = scored
        service.metrics.observe_predictions(f"{PREFIX}/models/{{name}}/infer", labels, served.version)
        service.offer_shadow(parsed.columns, parsed.n_rows, labels, proba)
        if (late := service.timed_out(request.scope, predicted=True)) is not None:
            return late
        return json_response(200, infer_response(served, parsed, labels, proba))

    for suffix in ("", "/versions/{version}"):
        route(f"{PREFIX}/models/{{name}}{suffix}", methods=["GET"])(model_meta)
        route(f"{PREFIX}/models/{{name}}{suffix}/ready", methods=["GET"])(model_ready)
        route(f"{PREFIX}/models/{{name}}{suffix}/infer", methods=["POST"])(infer)

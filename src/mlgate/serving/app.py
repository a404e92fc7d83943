"""The FastAPI app: health, readiness, metadata, MLflow-compatible /invocations, typed /predict, /metrics.

Requests are scored one at a time per worker (:meth:`Service.score`): a small body on the event loop, a larger
one in the service's one scoring thread, so that reading and scoring a body of the maximum size never keeps
the event loop from answering the probes. The model is CPU-bound and holds the GIL, so more threads would only
add contention (MLflow's server, which uses a pool, slows down under concurrency). Requests that waited longer
than the timeout before their turn get 503; those whose prediction ran past it get 504. Rows and columns are
counted while a body is read (413 past the limits); uvicorn answers 503 past ``limit_concurrency``.

``POST /invocations``, the hot path, is answered before FastAPI's routing (:class:`ServingApp`): its body is
parsed by hand anyway, so routing, dependency resolution and the request object were most of the time a
one-row request spends outside the model. The FastAPI route stays, for the OpenAPI document, and both answer
through the same function.
"""

import asyncio
import contextlib
import logging
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from mlgate.serving import schemas
from mlgate.serving.errors import ErrorBody, error, install_handlers, json_response, validation_message
from mlgate.serving.model import InputError, ServedModel, load_served_model, records_columns
from mlgate.serving.protocol import (
    CSV_TYPE,
    JSON_TYPE,
    SMALL_BODY,
    UnsupportedMediaType,
    media_type,
    parse_request,
)
from mlgate.serving.reader import TooLarge, read_records
from mlgate.serving.service import VERSION_HEADER, Service
from mlgate.serving.settings import ServingSettings
from mlgate.serving.v2 import add_v2_routes

log = logging.getLogger("mlgate.serving")
access_log = logging.getLogger("mlgate.serving.access")

REQUEST_ID_HEADER = "x-request-id"
SWITCH_INTERVAL = 0.001
ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class _BodyTooLarge(Exception):
    pass


class ServiceMiddleware:
    """Request id, body size limit (413), metrics and one JSON access-log line per request (pure ASGI)."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app, self.service, self.limit = app, service, service.settings.max_body_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")[:128] or uuid.uuid4().hex
        scope.setdefault("state", {}).update(request_id=request_id, start=start)
        sent = {"status": 500, "started": False}
        received = 0

        async def counted_receive() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _BodyTooLarge
            return message

        async def tagged_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                sent.update(status=message["status"], started=True)
                version = scope["state"].setdefault("model_version", self.service.model.version)
                message["headers"] = [
                    *message.get("headers", []),
                    (REQUEST_ID_HEADER.encode(), request_id.encode()),
                    (VERSION_HEADER.encode(), version.encode()),
                ]
            await send(message)

        try:
            length = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            length = 0
        try:
            if length > self.limit:
                raise _BodyTooLarge
            await self.app(scope, counted_receive, tagged_send)
        except _BodyTooLarge:
            if not sent["started"]:
                too_large = error(413, f"the body is over the limit of {self.limit} bytes", scope["path"])
                await too_large(scope, receive, tagged_send)
        except Exception:  # noqa: BLE001 - logged with its traceback; the client gets no details
            log.exception("unhandled error (request %s)", request_id)
            if not sent["started"]:
                await error(500, f"internal error (request id {request_id})", scope["path"])(
                    scope, receive, tagged_send
                )
        finally:
            seconds = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", "unmatched")
            version = scope["state"].get("model_version") or self.service.model.version
            self.service.metrics.observe_request(route, scope["method"], sent["status"], seconds, version)
            access_log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": sent["status"],
                    "duration_ms": round(seconds * 1000, 3),
                    "model_version": scope["state"].get("model_version"),
                    "client": (scope.get("client") or ("", 0))[0],
                },
            )


ERRORS = {"model": ErrorBody}


def _openapi(
    app: FastAPI, model: ServedModel, settings: ServingSettings, request_model: type[BaseModel]
) -> Callable[[], dict[str, Any]]:
    """The app's OpenAPI document, with the signature-derived request schemas added to it."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            components = spec.setdefault("components", {}).setdefault("schemas", {})
            components.update(schemas.invocation_components(model.columns))
            typed = request_model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(typed.pop("$defs", {}), **{request_model.__name__: typed})
            body = spec["paths"]["/invocations"]["post"]["requestBody"]["content"]
            body[JSON_TYPE]["schema"] = schemas.invocations_json_schema(model.columns, settings.max_rows)
            body[CSV_TYPE]["schema"] = {"type": "string", "pattern": schemas.csv_pattern(model.columns)}
            app.openapi_schema = spec
        return app.openapi_schema

    return build


class ServingApp(FastAPI):
    """The FastAPI app, with ``POST /invocations`` sent straight to :attr:`fast_invocations` (the same
    middleware, the same answer, none of FastAPI's routing)."""

    fast_invocations: ASGIApp | None = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if (
            self.fast_invocations is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == "/invocations"
        ):
            scope["app"] = self
            await self.fast_invocations(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def create_app(settings: ServingSettings, model: ServedModel) -> ServingApp:
    """The service around a loaded model; ``/ready`` turns 200 once start-up (with a warm-up) is done."""
    service = Service(settings, model)
    PredictRequest, PredictResponse = schemas.predict_models(
        model.columns, settings.max_rows, model.is_regressor
    )
    example = model.input_example[:2]

    follower = service.follower() if settings.follow else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            service.model.warm_up()
        except Exception as exc:  # noqa: BLE001 - a failed warm-up is worth a warning, not a refusal
            log.warning("warm-up prediction failed: %s", exc)
        service.ready = True
        log.info("model %s version %s ready", model.info.get("name"), model.version)
        shadow = service.start_shadow()
        tasks = [asyncio.create_task(loop.run()) for loop in (follower, shadow) if loop is not None]
        try:
            yield
        finally:
            service.ready = False
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if follower is not None:
                follower.close()
            if shadow is not None:
                shadow.close()
            service.close()

    docs = {} if settings.docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = ServingApp(
        title="mlgate inference",
        version=model.version,
        description=f"Model {model.info.get('name')}: MLflow's scoring protocol and a typed API. The Open "
        "Inference Protocol (V2) under /v2 is not in this document: the protocol publishes its own.",
        lifespan=lifespan,
        **docs,
    )
    app.openapi = _openapi(app, model, settings, PredictRequest)  # type: ignore[method-assign]
    app.state.service = service
    app.add_middleware(ServiceMiddleware, service=service)
    install_handlers(app)

    @app.get("/health", tags=["probes"])
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get(
        "/ready",
        tags=["probes"],
        responses={503: {"description": "Not ready yet (or shutting down).", **ERRORS}},
    )
    async def ready() -> Response:
        """Readiness: the model is loaded and warmed up."""
        if not service.ready:
            return error(503, "the model is not loaded yet", code="NOT_READY")
        return json_response(200, {"status": "ready", "model_version": service.model.version})

    @app.get("/metadata", tags=["model"])
    async def metadata() -> dict[str, Any]:
        """The served model: name, version, alias, run id, git commit, signature, package versions; and
        with --follow, the alias followed, the registry's state and the versions refused."""
        return {**service.model.info, **({"follow": follower.status} if follower else {})}

    @app.get("/version", tags=["model"])
    async def version() -> dict[str, Any]:
        """Short form of /metadata."""
        return {k: service.model.info.get(k) for k in ("name", "version", "alias", "run_id", "git_commit")}

    @app.get("/metrics", tags=["probes"], include_in_schema=False)
    async def prometheus() -> Response:
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    @app.post(
        "/invocations",
        tags=["predict"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    JSON_TYPE: {"example": {"dataframe_records": example}},  # schemas: see _openapi
                    CSV_TYPE: {},
                },
            }
        },
        responses={
            400: {"description": "Bad input (names the column or field)", **ERRORS},
            413: {"description": "Body, rows or columns over the limit", **ERRORS},
            415: {"description": "Not JSON or CSV", **ERRORS},
            503: {"description": "Waited past the timeout for a turn", **ERRORS},
            504: {"description": "Prediction ran past the timeout", **ERRORS},
        },
    )
    async def invocations(request: Request) -> Response:
        """MLflow's scoring protocol: dataframe_split, dataframe_records, instances, inputs, or text/csv."""
        body = await request.body()
        return await answer_invocations(request.scope, body, request.headers.get("content-type"))

    async def answer_invocations(scope: dict, body: bytes, content_type: str | None) -> Response:
        served = service.model
        service.served_by(scope, served)

        def score() -> tuple[dict[str, list[Any]], int, list[Any]]:
            columns, n_rows = parse_request(body, content_type, served.columns, service.limits)
            return columns, n_rows, served.predict(served.frame(columns, n_rows))

        try:
            scored = await service.score(scope, len(body), score)
        except UnsupportedMediaType as exc:
            return error(415, str(exc))
        except TooLarge as exc:
            return error(413, str(exc))
        except InputError as exc:
            return error(400, str(exc))
        except (ValueError, TypeError, KeyError) as exc:
            return error(400, f"the model could not score this input: {exc}")
        if isinstance(scored, Response):
            return scored
        columns, n_rows, predictions = scored
        service.metrics.observe_predictions("/invocations", predictions, served.version)
        service.offer_shadow(columns, n_rows, predictions)
        if (late := service.timed_out(scope, predicted=True)) is not None:
            return late
        return json_response(200, {"predictions": predictions})

    invocations_route = next(r for r in app.routes if getattr(r, "path", None) == "/invocations")

    async def raw_invocations(scope: dict, receive: Callable, send: Callable) -> None:
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        scope["route"] = invocations_route
        response = await answer_invocations(scope, b"".join(chunks), _header(scope, b"content-type"))
        await response(scope, receive, send)

    app.fast_invocations = ServiceMiddleware(raw_invocations, service)

    @app.post(
        "/predict",
        tags=["predict"],
        response_model=PredictResponse,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    JSON_TYPE: {
                        "schema": {"$ref": "#/components/schemas/PredictRequest"},
                        "examples": {"penguins": {"value": {"records": example}}},
                    }
                },
            }
        },
        responses={
            400: {"description": "The body is not JSON", **ERRORS},
            413: {"description": "Body, row or column count over the limit", **ERRORS},
            415: {"description": "Not JSON", **ERRORS},
            422: {"description": "The records do not match the signature (names each field)", **ERRORS},
            503: {"description": "Waited past the timeout for a turn", **ERRORS},
            504: {"description": "Prediction ran past the timeout", **ERRORS},
        },
    )
    async def predict(request: Request) -> Any:
        """Typed scoring: named features in, the most probable class and every class probability out (a
        regressor: the predicted value)."""
        served = service.model
        service.served_by(request.scope, served)
        body = await request.body()
        try:
            media_type(request.headers.get("content-type"), (JSON_TYPE,))
        except UnsupportedMediaType as exc:
            return error(415, str(exc))

        def score() -> tuple[list[dict[str, Any]], list[Any], Any]:
            if len(body) > SMALL_BODY:  # rows and fields counted before pydantic builds anything
                try:
                    read_records(body, service.limits)
                except TooLarge:
                    raise
                except InputError:
                    pass  # not JSON: pydantic says where, below
            payload = PredictRequest.model_validate_json(body)
            records = [r.model_dump() for r in payload.records]
            return records, *served.predict_proba(served.records_frame(records))

        try:
            scored = await service.score(request.scope, len(body), score)
        except TooLarge as exc:
            return error(413, str(exc))
        except ValidationError as exc:
            errors = exc.errors(include_input=False)
            status = 400 if any(e["type"] == "json_invalid" for e in errors) else 422
            return error(status, validation_message(errors))
        except InputError as exc:
            return error(422, str(exc))
        except (ValueError, TypeError, KeyError) as exc:
            return error(422, f"the model could not score this input: {exc}")
        if isinstance(scored, Response):
            return scored
        records, labels, proba = scored
        service.metrics.observe_predictions("/predict", labels, served.version)
        if service.shadow is not None:
            service.offer_shadow(*records_columns(records), labels, proba)
        if (late := service.timed_out(request.scope, predicted=True)) is not None:
            return late
        classes = [str(c) for c in served.classes]
        if served.is_regressor:
            rows: list[dict[str, Any]] = [{"value": value} for value in labels]
        else:
            rows = [
                {"label": label, "probabilities": dict(zip(classes, p))}
                for label, p in zip(labels, proba.tolist())
            ]
        return PredictResponse(
            predictions=rows,
            model_name=served.info.get("name"),
            model_version=served.version,
        )

    add_v2_routes(app, service)
    return app


def app_from_env() -> ServingApp:
    """The uvicorn factory: settings from the environment, the model from the local folder they name. The
    worker's GIL switch interval is 1 ms (Python's default: 5 ms), so that the event loop, which needs the GIL
    back after each wait for I/O, answers the probes promptly while the scoring thread holds it."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    settings = ServingSettings()
    if not settings.model:
        raise ValueError("MLGATE_SERVE_MODEL must name a local model folder")
    overrides = {
        "name": settings.model_name,
        "version": settings.model_version,
        "alias": settings.model_alias,
    }
    return create_app(settings, load_served_model(settings.model, overrides))

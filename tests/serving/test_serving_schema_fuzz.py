"""Property-based fuzzing of the OpenAPI schema (schemathesis): no generated request gets a 5xx."""

from __future__ import annotations

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from mlgate.serving.app import create_app
from mlgate.serving.model import ServedModel
from mlgate.serving.settings import ServingSettings

EXAMPLES_PER_OPERATION = 40


def test_no_generated_request_gets_a_server_error(served_model: ServedModel) -> None:
    app = create_app(ServingSettings(), served_model)
    with TestClient(app):  # run the lifespan, so /ready answers as in production
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.path for op in operations} >= {"/invocations", "/predict", "/ready", "/metadata"}
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: schemathesis.Case) -> None:
                case.call_and_validate(checks=[not_a_server_error])

            check()

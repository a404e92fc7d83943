"""What the service accepts and answers, derived from the model's signature: the typed /predict models, and
the JSON Schemas /openapi.json publishes for /invocations (the four JSON formats and the CSV body), exact
enough that every request they describe is scored and (as far as JSON Schema can say) every other is refused.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from mlgate.serving.model import INTEGER_LIMITS, NUMBER_LIMIT, Column
from mlgate.serving.protocol import PARAMS_KEY

ROW = "InvocationRow"


def _bounds(col: Column) -> dict[str, Any]:
    if col.type in INTEGER_LIMITS:
        low, high = INTEGER_LIMITS[col.type]
        return {"ge": low, "le": high}
    if col.python_type is float:
        return {"ge": -NUMBER_LIMIT, "le": NUMBER_LIMIT}
    return {}


def _nullable(col: Column) -> bool:
    """Whether a value may be null: floats (missing) and strings; integers and booleans never."""
    return col.python_type in (float, str)


def row_model(columns: list[Column]) -> type[BaseModel]:
    """The typed row of /predict: one field per signature column, strict types, no other fields."""
    fields: dict[str, Any] = {}
    for col in columns:
        kind = col.python_type | None if _nullable(col) else col.python_type
        default = ... if col.required else None
        fields[col.name] = (kind, Field(default, **_bounds(col)))
    return create_model("PredictRow", __config__=ConfigDict(strict=True, extra="forbid"), **fields)


def predict_models(
    columns: list[Column], max_rows: int, regression: bool = False
) -> tuple[type[BaseModel], type[BaseModel]]:
    """The /predict request (records of typed rows) and response: per row the label and class
    probabilities, or for a regressor the predicted value; and the model version."""
    request = create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        records=(
            list[row_model(columns)],
            Field(min_length=1, max_length=max_rows, description="Rows to score."),
        ),
    )

    class Prediction(BaseModel):
        label: str | int | float | bool = Field(description="The most probable class.")
        probabilities: dict[str, float] = Field(description="Probability of each class.")

    class ValuePrediction(BaseModel):
        value: float = Field(description="The predicted number.")

    class PredictResponse(BaseModel):
        predictions: list[ValuePrediction] if regression else list[Prediction]  # type: ignore[valid-type]
        model_name: str | None
        model_version: str | None = Field(description="The version that scored this request.")

    return request, PredictResponse


def _value_schema(col: Column) -> dict[str, Any]:
    kind = {float: "number", int: "integer", bool: "boolean", str: "string"}[col.python_type]
    schema: dict[str, Any] = {"type": [kind, "null"] if _nullable(col) else kind}
    bounds = _bounds(col)
    if bounds:
        schema.update(minimum=bounds["ge"], maximum=bounds["le"])
    return schema


def invocation_components(columns: list[Column]) -> dict[str, Any]:
    """Schemas to add to the OpenAPI components: the row of the record formats (extra columns are ignored)."""
    return {
        ROW: {
            "type": "object",
            "description": "One row: the model's signature columns (others are ignored).",
            "properties": {c.name: _value_schema(c) for c in columns},
            "required": [c.name for c in columns if c.required],
        }
    }


def invocations_json_schema(columns: list[Column], max_rows: int) -> dict[str, Any]:
    """The JSON body of /invocations: exactly one of MLflow's formats (records as rows, or a split frame)."""
    rows = {
        "type": "array",
        "items": {"$ref": f"#/components/schemas/{ROW}"},
        "minItems": 1,
        "maxItems": max_rows,
    }
    split = {
        "type": "object",
        "properties": {
            "columns": {"const": [c.name for c in columns], "description": "Column names, in this order."},
            "data": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_rows,
                "items": {
                    "type": "array",
                    "prefixItems": [_value_schema(c) for c in columns],
                    "minItems": len(columns),
                    "maxItems": len(columns),
                },
            },
        },
        "required": ["columns", "data"],
    }
    formats = {"dataframe_records": rows, "dataframe_split": split, "instances": rows, "inputs": rows}
    return {
        "oneOf": [
            {
                "type": "object",
                "properties": {key: schema, PARAMS_KEY: {"type": "object"}},
                "required": [key],
                "propertyNames": {"not": {"enum": [other for other in formats if other != key]}},
                "title": key,
            }
            for key, schema in formats.items()
        ]
    }


_CSV_FIELDS = {
    "number": r"(-?(0|[1-9][0-9]{0,15})(\.[0-9]{1,6})?)?",
    "integer": r"-?(0|[1-9][0-9]{0,15})",
    "boolean": r"(true|false)",
    "string": r'[^,"\r\n]*',
}


def csv_pattern(columns: list[Column]) -> str:
    """A regular expression for the CSV bodies /invocations scores: a header naming every signature column
    in order, then at least one row of typed values (an empty field is a missing value)."""
    kinds = {float: "number", int: "integer", bool: "boolean", str: "string"}
    header = ",".join(re.escape(c.name) for c in columns)
    row = ",".join(_CSV_FIELDS[kinds[c.python_type]] for c in columns)
    return rf"^{header}(\r?\n{row})+(\r?\n)?$"

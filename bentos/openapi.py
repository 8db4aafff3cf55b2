"""The scorer's OpenAPI 3.0 document, generated from the FeatureSpec so it always matches the raw schema.

Served at `GET /openapi.json`; the schemathesis test fuzzes the running service against it.
"""

from __future__ import annotations

from typing import Any

from tasks.config import ColumnSpec, FeatureSpec

__all__ = ["openapi_document", "transaction_schema"]

_ERRORS = {
    "400": "Malformed JSON",
    "413": "Body or record count over the limit",
    "415": "Content-Type is not application/json",
    "422": "A record breaks the raw schema, or the body has the wrong shape",
}


def _column_schema(column: ColumnSpec, nullable: bool) -> dict[str, Any]:
    schema: dict[str, Any]
    if column.type in ("float", "integer"):
        schema = {"type": "number" if column.type == "float" else "integer"}
        if column.min is not None:
            schema["minimum"] = column.min
            if column.exclusive_min:
                schema["exclusiveMinimum"] = True
        if column.max is not None:
            schema["maximum"] = column.max
    elif column.type == "string":
        schema = {"type": "string"}
        if column.allowed is not None:
            schema["enum"] = list(column.allowed)
    elif column.type == "boolean":
        schema = {"type": "boolean"}
    else:
        schema = {"type": "string", "format": "date-time", "description": "ISO 8601; UTC when no offset is given"}
    if nullable:
        schema["nullable"] = True
    return schema


def transaction_schema(spec: FeatureSpec, target_column: str | None) -> dict[str, Any]:
    """One raw transaction: every raw column but the target, required, nothing else."""
    required_values: set[str] = set()
    if spec.aggregates is not None and spec.entity_column is not None and spec.timestamp is not None:
        required_values = {spec.entity_column, spec.timestamp.column, spec.aggregates.amount_column}
    names = [name for name in spec.columns if name != target_column]
    return {
        "type": "object",
        "properties": {
            name: _column_schema(spec.columns[name], spec.columns[name].nullable and name not in required_values)
            for name in names
        },
        "required": names,
        "additionalProperties": False,
    }


def _result_schema() -> dict[str, Any]:
    reason = {
        "type": "object",
        "properties": {
            "feature": {"type": "string"},
            "value": {"type": "number"},
            "contribution": {"type": "number", "description": "coefficient x (value - training mean), log-odds"},
        },
        "required": ["feature", "value", "contribution"],
    }
    return {
        "type": "object",
        "properties": {
            "id": {"nullable": True, "description": "the id column's value"},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "decision": {"type": "string", "enum": ["decline", "approve"]},
            "threshold": {"type": "number"},
            "threshold_version": {"type": "string"},
            "model_version": {"type": "string"},
            "reason_codes": {"type": "array", "items": reason},
            "request_id": {"type": "string"},
        },
        "required": [
            "score",
            "decision",
            "threshold",
            "threshold_version",
            "model_version",
            "reason_codes",
            "request_id",
        ],
    }


def _error_schema() -> dict[str, Any]:
    error = {
        "type": "object",
        "properties": {
            "record": {"type": "integer"},
            "field": {"type": "string"},
            "expected": {"type": "string"},
            "got": {"type": "string", "nullable": True},
        },
        "required": ["record", "field", "expected"],
    }
    return {
        "type": "object",
        "properties": {
            "message": {"type": "string"},
            "errors": {"type": "array", "items": error},
            "request_id": {"type": "string"},
        },
        "required": ["message", "request_id"],
    }


def openapi_document(spec: FeatureSpec, target_column: str | None, limits: Any) -> dict[str, Any]:
    transaction_ref = {"$ref": "#/components/schemas/Transaction"}
    result_ref = {"$ref": "#/components/schemas/ScoreResult"}
    records = {"type": "array", "items": transaction_ref, "minItems": 1, "maxItems": limits.max_records}
    error_responses = {
        status: {
            "description": text,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for status, text in _ERRORS.items()
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "scoregate scorer", "version": "1"},
        "paths": {
            "/score": {
                "post": {
                    "operationId": "score",
                    "summary": "Score one transaction or a list of them",
                    "parameters": [
                        {
                            "name": "X-Request-ID",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "description": f"At most {limits.max_body_bytes} bytes and {limits.max_records} records.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "anyOf": [
                                        transaction_ref,
                                        records,
                                        {
                                            "type": "object",
                                            "properties": {"records": records},
                                            "required": ["records"],
                                            "additionalProperties": False,
                                        },
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "One result per record (an object for a single transaction)",
                            "content": {
                                "application/json": {
                                    "schema": {"anyOf": [result_ref, {"type": "array", "items": result_ref}]}
                                }
                            },
                        },
                        **error_responses,
                        "503": {"description": "The online feature store is unavailable"},
                    },
                }
            },
            "/model": {
                "get": {
                    "operationId": "model",
                    "summary": "The served model: version, threshold, feature-spec hash, trained-at",
                    "responses": {"200": {"description": "Model information"}},
                }
            },
        },
        "components": {
            "schemas": {
                "Transaction": transaction_schema(spec, target_column),
                "ScoreResult": _result_schema(),
                "Error": _error_schema(),
            }
        },
    }

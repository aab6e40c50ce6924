"""The OpenAPI 3.1 document of the ops HTTP API, served at `GET /openapi.json` and kept in the
repository as docs/ops-openapi.json (`python -m bot.ops.openapi > docs/ops-openapi.json`
writes it; tests/e2e/test_ops_api.py checks that the file, this document and the routes a real
bot registers agree, and fuzzes the running bot against it with schemathesis).

Built here rather than written by hand where the code already knows the shape: the webhook body
is the pydantic model's own JSON schema, `/status` lists the fields of `HealthSnapshot`, and the
limits are the handlers' constants. Adding a route to the ops server means adding it under
`PATHS` below (the test names what is missing).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from typing import Any, Final

from bot.healing.audit import HealEvent
from bot.healing.http import AUDIT_DEFAULT_LIMIT, DEFAULT_MAX_BODY_BYTES
from bot.healing.payload import PAYLOAD_VERSION, WebhookPayload
from bot.ops.diagnostics import MAX_FRAMES, MAX_TASKS, MAX_TOP, MAX_TRACE_FRAMES
from bot.ops.health import HealthSnapshot
from bot.ops.history import CSV_COLUMNS

__all__ = ["API_VERSION", "document", "operations"]

API_VERSION: Final = "1.0.0"
_REF: Final = "#/components/schemas/{model}"
# Upper bound of HEAL_AUDIT_MAX_ENTRIES (bot/config.py), the most `limit` may be.
_AUDIT_MAX: Final = 100_000


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str, *, challenge: bool = False) -> dict[str, Any]:
    answer = _json(_ref("Error"), description)
    if challenge:
        answer["headers"] = {
            "WWW-Authenticate": {
                "description": "The bearer challenge (RFC 6750).",
                "schema": {"type": "string"},
            }
        }
    return answer


def _guarded(setting: str) -> dict[str, Any]:
    """The answers every bearer-token route shares."""
    return {
        "401": _error(
            "No `Authorization: Bearer` header, or a wrong token.",
            challenge=True,
        ),
        "404": _error(f"Disabled: no {setting} is set."),
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _python_type(hint: Any) -> dict[str, Any]:
    origin = typing.get_origin(hint)
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if hint is float:
        return {"type": "number"}
    if hint is str:
        return {"type": "string"}
    if origin is dict:
        return {"type": "object"}
    if origin in (list, tuple):
        return {"type": "array"}
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return {"anyOf": [_python_type(arg) for arg in typing.get_args(hint)]}
    if hint is type(None):
        return {"type": "null"}
    return {}


def _status_schema() -> dict[str, Any]:
    hints = typing.get_type_hints(HealthSnapshot)
    fields = [field.name for field in dataclasses.fields(HealthSnapshot)]
    return {
        "type": "object",
        "description": "The bot's figures now (bot.ops.health.HealthSnapshot).",
        "properties": {name: _python_type(hints[name]) for name in fields},
        "required": fields,
    }


def _audit_schema() -> dict[str, Any]:
    text = {"type": "string"}
    entry = {
        "type": "object",
        "properties": {
            "seq": {"type": "integer"},
            "time": {"type": "number"},
            "at": text,
            "alertname": text,
            "fingerprint": text,
            "status": text,
            "action": {"type": ["string", "null"]},
            "kind": text,
            "outcome": text,
            "detail": text,
            "figures": {"type": "object", "additionalProperties": {"type": "number"}},
            "by": text,
            "trace_id": text,
        },
        "required": ["seq", "time", "outcome"],
    }
    assert set(entry["properties"]) >= {f.name for f in dataclasses.fields(HealEvent)} - {"time"}
    return {
        "type": "object",
        "properties": {
            "instance": text,
            "enabled": {"type": "boolean"},
            "dry_run": {"type": "boolean"},
            "capacity": {"type": "integer"},
            "size": {"type": "integer"},
            "count": {"type": "integer"},
            "entries": {"type": "array", "items": entry},
        },
        "required": ["instance", "enabled", "dry_run", "capacity", "size", "count", "entries"],
    }


def _schemas() -> dict[str, Any]:
    payload = WebhookPayload.model_json_schema(by_alias=True, ref_template=_REF)
    defs = payload.pop("$defs", {})
    # The model's validator takes this version only (the JSON schema cannot say so by itself).
    payload["properties"]["version"] = {"type": "string", "const": PAYLOAD_VERSION}
    payload["description"] = (
        "An Alertmanager webhook notification (version 4); extra fields are ignored."
    )
    decision = {
        "type": "object",
        "properties": {
            "fingerprint": {"type": "string"},
            "status": {"enum": ["firing", "resolved"]},
            "action": {"type": ["string", "null"]},
            "decision": {
                "enum": [
                    "apply",
                    "revert",
                    "ignored",
                    "duplicate",
                    "cooldown",
                    "escalated",
                    "rejected",
                    "disabled",
                    "dry_run",
                ]
            },
            "detail": {"type": "string"},
        },
        "required": ["fingerprint", "status", "action", "decision", "detail"],
    }
    check = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "detail": {"type": "string"}},
        "required": ["ok", "detail"],
    }
    return {
        **defs,
        "WebhookPayload": payload,
        "Decision": decision,
        "SubmitSummary": {
            "type": "object",
            "properties": {
                "queued": {"type": "integer", "minimum": 0},
                "decisions": {"type": "array", "items": _ref("Decision")},
                "error": {"type": "string"},
            },
            "required": ["queued", "decisions"],
        },
        "Error": {
            "type": "object",
            "properties": {"error": {"type": "string", "description": "What was wrong."}},
            "required": ["error"],
        },
        "Readiness": {
            "type": "object",
            "properties": {
                "status": {"enum": ["ready", "not ready"]},
                "checks": {"type": "object", "additionalProperties": check},
            },
            "required": ["status", "checks"],
        },
        "Status": _status_schema(),
        "History": {
            "type": "object",
            "properties": {
                "columns": {
                    "type": "array",
                    "items": {"enum": list(CSV_COLUMNS)},
                },
                "points": {"type": "array", "items": {"type": "object"}},
            },
            "required": ["columns", "points"],
        },
        "Audit": _audit_schema(),
        "Diagnostics": {
            "type": "object",
            "description": "A diagnostics report (see docs/runbooks.md, diagnostics on demand).",
        },
    }


_TIME = {"type": "string"}
_TIME_HELP = "Epoch seconds or an ISO 8601 date/time (naive means UTC)."
_LIMIT = "How many to list at most."

PATHS: Final[dict[str, dict[str, Any]]] = {
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "description": (
                "Text format 0.0.4, or OpenMetrics 1.0 (with exemplars) when the Accept header "
                "names application/openmetrics-text. docs/metrics.md lists every metric."
            ),
            "operationId": "metrics",
            "responses": {
                "200": {
                    "description": "The metrics.",
                    "content": {
                        "text/plain": {"schema": {"type": "string"}},
                        "application/openmetrics-text": {"schema": {"type": "string"}},
                    },
                }
            },
        }
    },
    "/healthz": {
        "get": {
            "summary": "Liveness: answers while the event loop runs",
            "operationId": "healthz",
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {"status": {"const": "ok"}},
                        "required": ["status"],
                    },
                    "The process is alive.",
                )
            },
        }
    },
    "/readyz": {
        "get": {
            "summary": "Readiness: gateway connected, store healthy, not in maintenance",
            "operationId": "readyz",
            "responses": {
                "200": _json(_ref("Readiness"), "Ready."),
                "503": _json(_ref("Readiness"), "Not ready; `checks` says what is missing."),
            },
        }
    },
    "/status": {
        "get": {
            "summary": "The bot's figures now, as JSON",
            "operationId": "status",
            "responses": {"200": _json(_ref("Status"), "The figures.")},
        }
    },
    "/status/history": {
        "get": {
            "summary": "Health snapshots over time (JSON or CSV)",
            "operationId": "statusHistory",
            "parameters": [
                _query("from", _TIME, f"First instant. {_TIME_HELP}"),
                _query("to", _TIME, f"Last instant (a bare date: its end). {_TIME_HELP}"),
                _query("format", {"enum": ["json", "csv"]}, "json (default) or csv."),
            ],
            "responses": {
                "200": {
                    "description": "The snapshots in the range.",
                    "content": {
                        "application/json": {"schema": _ref("History")},
                        "text/csv": {"schema": {"type": "string"}},
                    },
                },
                "400": _error("A bad bound or format."),
                "404": _error("The health history is not enabled."),
            },
        }
    },
    "/alerts": {
        "post": {
            "summary": "The Alertmanager webhook (self-healing)",
            "description": (
                "Decides for every alert (apply, revert, ignored, duplicate, cooldown, "
                "escalated, rejected, disabled, dry_run) and answers at once; the heals run in "
                "the background. 4xx means Alertmanager should not retry, 503 that it should. "
                f"The body is at most {DEFAULT_MAX_BODY_BYTES} bytes."
            ),
            "operationId": "alerts",
            "security": [{"alertsToken": []}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("WebhookPayload")}},
            },
            "responses": {
                "200": _json(
                    _ref("SubmitSummary"), "Recorded, nothing queued (HEAL_ENABLED off or dry run)."
                ),
                "202": _json(_ref("SubmitSummary"), "Decided; accepted heals are queued."),
                "400": _error("Not an Alertmanager v4 payload; `error` says why."),
                **_guarded("ALERT_WEBHOOK_TOKEN"),
                "403": _error("No token set and the client is not loopback."),
                "408": _error("The body did not arrive in time."),
                "413": _error("The body is too large."),
                "415": _error("Not JSON."),
                "503": _json(
                    {"anyOf": [_ref("SubmitSummary"), _ref("Error")]},
                    "Shutting down, job backlog full or too many notifications waiting: retry.",
                ),
            },
        }
    },
    "/heal/audit": {
        "get": {
            "summary": "The heal audit: decisions and results, newest first",
            "operationId": "healAudit",
            "security": [{"alertsToken": []}],
            "parameters": [
                _query(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": _AUDIT_MAX},
                    f"{_LIMIT} Default {AUDIT_DEFAULT_LIMIT}, at most HEAL_AUDIT_MAX_ENTRIES.",
                ),
                _query("since", _TIME, f"Entries from this time on. {_TIME_HELP}"),
            ],
            "responses": {
                "200": _json(_ref("Audit"), "The entries."),
                "400": _error("A bad or unknown parameter."),
                **_guarded("ALERT_WEBHOOK_TOKEN"),
                "403": _error("No token set and the client is not loopback."),
            },
        }
    },
    "/debug/tasks": {
        "get": {
            "summary": "The asyncio tasks, grouped by where they wait",
            "operationId": "debugTasks",
            "security": [{"adminToken": []}],
            "parameters": [
                _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_TASKS}, _LIMIT),
                _query(
                    "frames",
                    {"type": "integer", "minimum": 1, "maximum": MAX_FRAMES},
                    "Stack frames per group.",
                ),
            ],
            "responses": {
                "200": _json(_ref("Diagnostics"), "The tasks."),
                "400": _error("A bad parameter."),
                **_guarded("OPS_ADMIN_TOKEN (or ALERT_WEBHOOK_TOKEN)"),
            },
        }
    },
    "/debug/memory": {
        "get": {
            "summary": "Top allocations (tracemalloc)",
            "operationId": "debugMemory",
            "security": [{"adminToken": []}],
            "parameters": [
                _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_TOP}, _LIMIT),
                _query("group_by", {"enum": ["lineno", "filename", "traceback"]}, "How to group."),
            ],
            "responses": {
                "200": _json(_ref("Diagnostics"), "The allocations (or that tracing is off)."),
                "400": _error("A bad parameter."),
                **_guarded("OPS_ADMIN_TOKEN (or ALERT_WEBHOOK_TOKEN)"),
            },
        },
        "post": {
            "summary": "Switch tracemalloc on or off",
            "operationId": "debugMemorySwitch",
            "security": [{"adminToken": []}],
            "parameters": [
                {
                    "name": "trace",
                    "in": "query",
                    "required": True,
                    "description": "on or off.",
                    "schema": {"enum": ["on", "off"]},
                },
                _query(
                    "frames",
                    {"type": "integer", "minimum": 1, "maximum": MAX_TRACE_FRAMES},
                    "Frames per allocation (with trace=on).",
                ),
            ],
            "responses": {
                "200": _json(_ref("Diagnostics"), "Tracing's state after the switch."),
                "400": _error("A bad parameter."),
                **_guarded("OPS_ADMIN_TOKEN (or ALERT_WEBHOOK_TOKEN)"),
            },
        },
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "operationId": "openapi",
            "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
        }
    },
}


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the ops API."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "discord-llm-bot ops API",
            "version": API_VERSION,
            "description": (
                "Metrics, probes, status and history, the Alertmanager webhook and the heal "
                "audit, and diagnostics on demand. docs/ops-api.md describes it."
            ),
        },
        "servers": [{"url": "http://127.0.0.1:9464", "description": "OPS_HOST:OPS_PORT"}],
        "paths": PATHS,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "alertsToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "ALERT_WEBHOOK_TOKEN[_FILE]: /alerts and /heal/audit.",
                },
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "OPS_ADMIN_TOKEN[_FILE] (else ALERT_WEBHOOK_TOKEN): /debug.",
                },
            },
        },
    }


def operations() -> set[tuple[str, str]]:
    """(METHOD, path) of every operation the document describes."""
    return {(method.upper(), path) for path, item in PATHS.items() for method in item}


if __name__ == "__main__":
    json.dump(document(), sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")

"""The Alertmanager webhook payload (version 4) and a parser that explains what is wrong.

Types are strict (a label value must be a JSON string, `truncatedAlerts` an integer) and extra
fields are ignored, so a newer Alertmanager adding fields keeps working. Alertmanager always
sends every field; only those the receiver relies on are required, so hand-written payloads
(curl, tests) can stay short.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails, PydanticCustomError

__all__ = [
    "PAYLOAD_VERSION",
    "Alert",
    "AlertStatus",
    "PayloadError",
    "WebhookPayload",
    "parse_payload",
]

PAYLOAD_VERSION: Final = "4"
# A key in a reason is cut to this many characters, and a reason to REASON_CHARS: the reason is
# logged and answered, and must not echo a 200 KB label name.
KEY_CHARS: Final = 40
REASON_CHARS: Final = 300

AlertStatus = Literal["firing", "resolved"]

# Short English for the pydantic error types a malformed payload produces; anything else falls
# back to pydantic's own message.
_REASONS: Final[dict[str, str]] = {
    "missing": "is required",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "list_type": "must be an array",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "string_too_short": "must not be empty",
    "greater_than_equal": "must not be negative",
}


class PayloadError(ValueError):
    """The body is not an Alertmanager v4 webhook payload; `reason` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True, populate_by_name=True)


class Alert(_Model):
    """One alert of a notification; `fingerprint` identifies its label set."""

    status: AlertStatus
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime = Field(alias="startsAt")
    # Alertmanager sends 0001-01-01T00:00:00Z for an alert that has not ended.
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str = Field(min_length=1)


class WebhookPayload(_Model):
    """A webhook notification: one alert group, with its common labels and its alerts."""

    version: str
    status: AlertStatus
    alerts: list[Alert]
    receiver: str = ""
    group_key: str = Field(default="", alias="groupKey")
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts", ge=0)
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")

    @field_validator("version")
    @classmethod
    def _known_version(cls, version: str) -> str:
        if version != PAYLOAD_VERSION:
            raise PydanticCustomError(
                "payload_version",
                "version must be {expected}, got {got}",
                {"expected": json.dumps(PAYLOAD_VERSION), "got": json.dumps(version[:20])},
            )
        return version


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        # A key comes from the sender: quote odd ones so a reason stays one printable line,
        # and cut long ones.
        name = part if part.isidentifier() and len(part) <= KEY_CHARS else _quoted(part)
        text += f".{name}" if text else name
    return text


def _quoted(key: str) -> str:
    shown = repr(key[:KEY_CHARS])
    return shown if len(key) <= KEY_CHARS else f"{shown}…"


def _reason(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind == "json_invalid":
        detail = error.get("ctx", {}).get("error", "")
        return f"body is not valid JSON: {detail}" if detail else "body is not valid JSON"
    if kind == "payload_version":
        return error["msg"]
    if error["loc"] == ("version",) and kind != "missing":
        return f'version must be "{PAYLOAD_VERSION}" (a string)'
    where = _location(error["loc"])
    if not where:
        return "payload must be a JSON object" if kind.endswith("type") else error["msg"]
    if kind in _REASONS:
        return f"{where} {_REASONS[kind]}"
    if kind.startswith("datetime"):
        return f"{where} must be an RFC 3339 timestamp"
    if kind == "literal_error":
        return f"{where} must be {error.get('ctx', {}).get('expected', 'one of the known values')}"
    message = error["msg"]
    return f"{where}: {message[:1].lower()}{message[1:]}"


def parse_payload(body: bytes) -> WebhookPayload:
    """Parse and validate a webhook body; raise `PayloadError` with a short reason otherwise."""
    try:
        return WebhookPayload.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        # Another version's payload fails on many fields; the version is the cause worth naming.
        errors.sort(key=lambda error: error["loc"] != ("version",))
        reason = _reason(errors[0]) if errors else "invalid payload"
        # The fields of another version's payload would only repeat that version is wrong.
        if len(errors) > 1 and errors[0]["loc"] != ("version",):
            reason += f" (and {len(errors) - 1} more)"
        if len(reason) > REASON_CHARS:
            reason = reason[: REASON_CHARS - 1] + "…"
        raise PayloadError(reason) from None

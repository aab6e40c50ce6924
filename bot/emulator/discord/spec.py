"""Request-body validation against Discord's OpenAPI description, with the docs' corrections.

The package ships ``openapi_subset.json``: the request bodies the emulator checks and every
schema they reach, cut from Discord's public spec (MIT, see ``openapi.LICENSE``). Regenerate it
with ``python -m bot.emulator.discord.spec PATH/TO/discord-openapi.json``.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The stubs are the separate types-jsonschema package; without them the import is untyped.
import jsonschema  # type: ignore[import-untyped,unused-ignore]
import referencing
from jsonschema.exceptions import ValidationError  # type: ignore[import-untyped,unused-ignore]
from referencing.jsonschema import DRAFT202012

from bot.emulator.discord.messages import MAX_CONTENT_LENGTH

__all__ = ["OPERATIONS", "SUBSET_PATH", "FieldError", "build_subset", "discord_errors", "validate"]

JSON = dict[str, Any]
SUBSET_PATH = Path(__file__).with_name("openapi_subset.json")
_BASE_URI = "urn:discord-openapi"

# Operation name → (path, method) in the spec. Only these bodies are validated.
OPERATIONS: dict[str, tuple[str, str]] = {
    "message_create": ("/channels/{channel_id}/messages", "post"),
    "message_edit": ("/channels/{channel_id}/messages/{message_id}", "patch"),
    "interaction_callback": (
        "/interactions/{interaction_id}/{interaction_token}/callback",
        "post",
    ),
    "webhook_execute": ("/webhooks/{webhook_id}/{webhook_token}", "post"),
    "webhook_message_edit": (
        "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}",
        "patch",
    ),
    "commands_put": ("/applications/{application_id}/commands", "put"),
    "command_create": ("/applications/{application_id}/commands", "post"),
    "guild_commands_put": ("/applications/{application_id}/guilds/{guild_id}/commands", "put"),
    "guild_command_create": ("/applications/{application_id}/guilds/{guild_id}/commands", "post"),
    "dm_create": ("/users/@me/channels", "post"),
}

# Where Discord's docs and the preview spec disagree, the docs win (schema name → content limit).
_DOC_CONTENT_LIMITS = {
    "MessageCreateRequest": MAX_CONTENT_LENGTH,
    "MessageEditRequestPartial": MAX_CONTENT_LENGTH,
}


@dataclass(frozen=True)
class FieldError:
    """One invalid field: where it is, Discord's error code and a readable message."""

    path: tuple[str | int, ...]
    code: str
    message: str

    def __str__(self) -> str:
        where = ".".join(str(p) for p in self.path) or "<body>"
        return f"{where}: {self.message}"


def _pointer(path: str, method: str) -> str:
    escaped = path.replace("~", "~0").replace("/", "~1")
    return f"/paths/{escaped}/{method}/requestBody/content/application~1json/schema"


def _walk_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value.rsplit("/", 1)[-1]
            else:
                yield from _walk_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_refs(item)


def build_subset(spec: Mapping[str, Any]) -> JSON:
    """Cut the validated request bodies, and every schema they reach, out of the full spec."""
    all_schemas = spec["components"]["schemas"]
    paths: dict[str, dict[str, JSON]] = {}
    pending: list[str] = []
    for path, method in OPERATIONS.values():
        schema = spec["paths"][path][method]["requestBody"]["content"]["application/json"]
        paths.setdefault(path, {})[method] = {
            "requestBody": {"content": {"application/json": schema}}
        }
        pending.extend(_walk_refs(schema))
    kept: dict[str, Any] = {}
    while pending:
        name = pending.pop()
        if name not in kept:
            kept[name] = all_schemas[name]
            pending.extend(_walk_refs(kept[name]))
    return {
        "openapi": spec["openapi"],
        "info": spec["info"],
        "paths": paths,
        "components": {"schemas": dict(sorted(kept.items()))},
    }


@functools.cache
def _registry() -> referencing.Registry[Any]:
    document = json.loads(SUBSET_PATH.read_text(encoding="utf-8"))
    schemas = document["components"]["schemas"]
    for name, limit in _DOC_CONTENT_LIMITS.items():
        schemas[name]["properties"]["content"]["maxLength"] = limit
    # Discord accepts snowflakes as integers in request bodies (hikari sends attachment ids
    # as 0, 1, ...); the spec only allows strings.
    schemas["SnowflakeType"] = {
        "anyOf": [schemas["SnowflakeType"], {"type": "integer", "minimum": 0}]
    }
    resource: referencing.Resource[Any] = referencing.Resource.from_contents(
        document, default_specification=DRAFT202012
    )
    registry: referencing.Registry[Any] = referencing.Registry().with_resource(_BASE_URI, resource)
    return registry


def _resolve(pointer: str) -> Any:
    return _registry().resolver().lookup(f"{_BASE_URI}#{pointer}").contents


@functools.cache
def _validator(pointer: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$ref": f"{_BASE_URI}#{pointer}"}, registry=_registry())


@functools.cache
def _union_branches(pointer: str) -> tuple[tuple[frozenset[int], str], ...]:
    """Return (accepted ``type`` values, branch pointer) of a discriminated root union."""
    schema = _resolve(pointer)
    branches = []
    for index, branch in enumerate(schema.get("anyOf", [])):
        target = branch.get("$ref", "").split("#", 1)[-1] or f"{pointer}/anyOf/{index}"
        enum = _resolve(target).get("properties", {}).get("type", {}).get("enum", [])
        branches.append((frozenset(enum), target))
    return tuple(branches)


def _relevance(error: ValidationError) -> tuple[bool, int]:
    # In a union, a branch rejected only for its type (say ``null``) was not the one the
    # sender meant; among the others the deepest error is the most specific.
    return (error.validator != "type", len(error.absolute_path))


def _field_error(error: ValidationError) -> FieldError:
    # Descend into unions so the message names the real problem, not "is not valid under anyOf".
    while error.validator in ("anyOf", "oneOf") and error.context:
        error = max(error.context, key=_relevance)
    path = tuple(error.absolute_path)
    limit = error.validator_value
    if error.validator in ("maxLength", "maxItems"):
        return FieldError(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")
    if error.validator in ("minLength", "minItems"):
        return FieldError(path, "BASE_TYPE_MIN_LENGTH", f"Must be {limit} or more in length.")
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else "?"
        return FieldError((*path, missing), "BASE_TYPE_REQUIRED", "This field is required")
    if error.validator == "enum":
        return FieldError(path, "BASE_TYPE_CHOICES", f"Value must be one of {limit}.")
    return FieldError(path, "BASE_TYPE_INVALID", _shorten(error.message))


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def validate(operation: str, body: Any) -> list[FieldError]:
    """Return the problems of a request body for an operation of ``OPERATIONS`` (empty if valid)."""
    pointer = _pointer(*OPERATIONS[operation])
    branches = _union_branches(pointer)
    kind = body.get("type") if isinstance(body, dict) else None
    chosen = [target for enum, target in branches if kind in enum]
    accepted = sorted(set().union(*(enum for enum, _ in branches)))
    if accepted and not chosen:
        return [FieldError(("type",), "BASE_TYPE_CHOICES", f"Value must be one of {accepted}.")]
    # Discriminated unions (interaction callbacks) are checked against the branch their
    # ``type`` selects; other unions fall back to the whole anyOf.
    validator = _validator(chosen[0] if chosen else pointer)
    errors = sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.absolute_path)))
    return [_field_error(e) for e in errors[:10]]


def discord_errors(problems: list[FieldError]) -> JSON:
    """Nest field errors the way Discord's 50035 answer does."""
    tree: JSON = {}
    for problem in problems:
        node = tree
        for part in problem.path:
            node = node.setdefault(str(part), {})
        node.setdefault("_errors", []).append({"code": problem.code, "message": problem.message})
    return tree


def main(argv: list[str]) -> int:
    """Regenerate the vendored subset from a full ``discord-openapi.json``."""
    if len(argv) != 1:
        print("usage: python -m bot.emulator.discord.spec PATH/TO/discord-openapi.json")
        return 2
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    text = json.dumps(build_subset(spec), indent=1, sort_keys=True, ensure_ascii=False)
    SUBSET_PATH.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {SUBSET_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

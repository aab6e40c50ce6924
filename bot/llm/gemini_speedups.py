"""Same-result, faster replacements for two google-genai helpers: one on the request path, one
on the response path (every chunk of a stream).

google-genai turns every request into JSON with `_common.get_value_by_path`, about 25 lookups per
message part. For a pydantic model it first tries `key in model`, which pydantic answers by
iterating every field as a `(name, value)` tuple and comparing each to the key (never equal), and
only then falls back to `getattr`. That scan was a quarter of the bot's CPU per answered
message (profile in benchmarks/RESULTS.md; `_GenerateContentParameters_to_mldev` over 18 turns:
2.6 ms with the SDK's helper, 0.6 ms with this one).

`fast_get_value_by_path` returns exactly what the SDK's helper returns for every input (a
hypothesis test in tests/llm/test_gemini_speedups.py compares the two), including the SDK's quirk
that `name[]` and `name[0]` path steps never match on a pydantic model. It is installed only into
`google.genai.models`, and only while that module still binds the helper this was written
against and both agree on a few request-shaped probes at install time; otherwise the SDK's own
is left in place.

`fast_remove_extra_fields` does what `_common._remove_extra_fields` does to each response (drop
the keys a model does not know, recursively, before validation), but looks each model's fields,
aliases and nested model types up once per model class instead of rebuilding its alias map for
every key of every response: a streamed answer parses one response per chunk (20 for the
benchmark's answer). Installed into `google.genai._common` on the same terms (the SDK's own
helper still bound, and both agree on probe responses); tests/llm/test_gemini_speedups.py
compares the two with hypothesis.
"""

from __future__ import annotations

import copy
import logging
import typing
from typing import Any

import pydantic
from google.genai import _common, types
from google.genai import models as _models

__all__ = ["fast_get_value_by_path", "fast_remove_extra_fields", "install"]

log = logging.getLogger(__name__)

_original = _common.get_value_by_path
_original_remove = _common._remove_extra_fields
# Per model class: accepted key (field name or alias) -> (model type to prune a dict value
# against, model type to prune a list's dict items against); only for complete models.
_Plan = dict[str, tuple[type[pydantic.BaseModel] | None, type[pydantic.BaseModel] | None]]
_plans: dict[type, _Plan] = {}


def fast_get_value_by_path(data: Any, keys: list[str], *, default_value: Any = None) -> Any:
    """`google.genai._common.get_value_by_path` without the field scan on pydantic models."""
    if keys == ["_self"]:
        return data
    for i, key in enumerate(keys):
        if not data:
            return default_value
        if isinstance(data, pydantic.BaseModel):
            # `key in model` is always False in the SDK's helper (pydantic iterates tuples), so
            # only its `hasattr` fallback can match: on the SDK's own models, and never for
            # `[]` / `[0]` steps.
            if (
                not isinstance(data, _common.BaseModel)
                or key.endswith(("[]", "[0]"))
                or not hasattr(data, key)
            ):
                return default_value
            data = getattr(data, key)
        elif key.endswith("[]"):
            key_name = key[:-2]
            if key_name not in data:
                return default_value
            rest = keys[i + 1 :]
            return [
                fast_get_value_by_path(d, rest, default_value=default_value) for d in data[key_name]
            ]
        elif key.endswith("[0]"):
            key_name = key[:-3]
            if key_name in data and data[key_name]:  # noqa: RUF019 (data may be a list)
                return fast_get_value_by_path(
                    data[key_name][0], keys[i + 1 :], default_value=default_value
                )
            return default_value
        elif key in data:
            data = data[key]
        else:
            return default_value
    return data


def fast_remove_extra_fields(model: Any, response: dict[str, object]) -> None:
    """`google.genai._common._remove_extra_fields` with each model's lookups made once."""
    plan = _plans.get(model)
    if plan is None:
        plan = _plan(model)
    for key, value in list(response.items()):
        entry = plan.get(key)
        if entry is None:
            response.pop(key)
            continue
        dict_type, item_type = entry
        if isinstance(value, dict):
            if dict_type is not None:
                fast_remove_extra_fields(dict_type, value)
        elif isinstance(value, list) and item_type is not None:
            for item in value:
                if isinstance(item, dict):
                    fast_remove_extra_fields(item_type, item)


def _plan(model: Any) -> _Plan:
    """What the SDK's helper computes for each key of `model`, computed once."""
    if isinstance(model, type) and issubclass(model, pydantic.BaseModel):
        model.model_rebuild(raise_errors=False)  # as the SDK's helper does, on first use
    fields = model.model_fields
    alias_map = {info.alias: name for name, info in fields.items()}
    plan: _Plan = {}
    for key in [*fields, *(a for a in alias_map if isinstance(a, str))]:
        name = alias_map.get(key, key)
        annotation = fields[name].annotation
        if typing.get_origin(annotation) is typing.Union:
            annotation = typing.get_args(annotation)[0]
        dict_type = _common._as_base_model_type(annotation)
        item_type = None
        if not _common._is_struct_type(annotation):
            args = typing.get_args(annotation)
            item_type = _common._as_base_model_type(args[0] if args else None)
        plan[key] = (dict_type, item_type)
    if getattr(model, "__pydantic_complete__", False):
        _plans[model] = plan
    return plan


def _response_probes() -> list[tuple[type[pydantic.BaseModel], dict[str, Any]]]:
    chunk = {
        "candidates": [
            {
                "content": {"parts": [{"text": "Hi", "thought": False, "new": 1}], "role": "model"},
                "finishReason": "STOP",
                "index": 0,
                "unknownField": {"x": 1},
            }
        ],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1, "future": 2},
        "modelVersion": "gemini-2.5-flash",
        "responseId": "abc",
        "sdkHttpResponse": {"headers": {"a": "b"}},
        "extra": [1, 2],
    }
    return [(types.GenerateContentResponse, chunk), (types.Content, {"parts": [{}], "x": 1})]


def _same_responses() -> bool:
    for model, data in _response_probes():
        expected, got = copy.deepcopy(data), copy.deepcopy(data)
        try:
            _original_remove(model, expected)
        except Exception:
            return False
        fast_remove_extra_fields(model, got)
        if got != expected:
            return False
    return True


def _probes() -> list[tuple[Any, list[str]]]:
    part = types.Part(text="hi")
    content = types.Content(role="user", parts=[part])
    return [
        (content, ["role"]),
        (content, ["parts"]),
        (content, ["parts[]", "text"]),
        (content, ["missing"]),
        (part, ["text"]),
        ({"contents": [content]}, ["contents[]", "role"]),
        ({"contents": [content]}, ["contents[0]", "role"]),
        ({"a": {"b": 1}}, ["a", "b"]),
        ({"a": {}}, ["a", "b"]),
        ([1], ["_self"]),
    ]


def _same_results() -> bool:
    """Both helpers agree on a few request-shaped inputs (a changed SDK fails this)."""
    for data, keys in _probes():
        try:
            expected = _original(data, keys, default_value="<default>")
        except Exception:
            return False
        if fast_get_value_by_path(data, keys, default_value="<default>") != expected:
            return False
    return True


def install() -> bool:
    """Use the fast helpers in `google.genai`; False when the SDK no longer matches (for
    either; each is installed only when it matches)."""
    return _install_request_helper() & _install_response_helper()


def _install_request_helper() -> bool:
    current = getattr(_models, "getv", None)
    if current is fast_get_value_by_path:
        return True
    if current is not _original or not _same_results():
        log.info("google-genai's request helper changed; keeping the SDK's own")
        return False
    _models.getv = fast_get_value_by_path  # type: ignore[attr-defined]
    return True


def _install_response_helper() -> bool:
    current = getattr(_common, "_remove_extra_fields", None)
    if current is fast_remove_extra_fields:
        return True
    if current is not _original_remove or not _same_responses():
        log.info("google-genai's response helper changed; keeping the SDK's own")
        return False
    _common._remove_extra_fields = fast_remove_extra_fields
    return True

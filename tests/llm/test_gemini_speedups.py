"""The fast google-genai path helper answers exactly what the SDK's own answers."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from google import genai
from google.genai import _common, types
from google.genai import models as genai_models
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from bot.llm import gemini_speedups
from bot.llm.gemini_speedups import fast_get_value_by_path, fast_remove_extra_fields

NAMES = ["a", "b", "text", "parts", "role", "inline_data", "data"]


class Inner(_common.BaseModel):  # like the SDK's own models
    text: str | None = None
    data: bytes | None = None


class Outer(_common.BaseModel):
    role: str | None = None
    parts: list[Inner] | None = None
    a: Any = None


class Plain(BaseModel):  # any other pydantic model
    text: str | None = None
    a: Any = None


leaves = st.none() | st.integers() | st.text(max_size=3) | st.binary(max_size=3)
inner = st.builds(
    Inner, text=st.none() | st.text(max_size=3), data=st.none() | st.binary(max_size=2)
)


def _values(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (
        st.dictionaries(st.sampled_from(NAMES), children, max_size=4)
        | st.lists(children, max_size=3)
        | st.builds(
            Outer,
            role=st.none() | st.text(max_size=2),
            parts=st.none() | st.lists(inner, max_size=2),
            a=children,
        )
        | st.builds(Plain, text=st.none() | st.text(max_size=2), a=children)
    )


values = st.recursive(leaves | inner, _values, max_leaves=12)
steps = st.sampled_from(NAMES).flatmap(lambda n: st.sampled_from([n, f"{n}[]", f"{n}[0]"]))
paths = st.lists(steps, min_size=1, max_size=4) | st.just(["_self"])


def _outcome(fn: Any, data: Any, keys: list[str]) -> tuple[str, Any]:
    try:
        return "value", fn(data, keys, default_value="<default>")
    except Exception as exc:  # the SDK's helper raises on some shapes; so must ours
        return "raises", type(exc)


@given(data=values, keys=paths)
def test_fast_helper_agrees_with_the_sdk(data: Any, keys: list[str]) -> None:
    assert _outcome(fast_get_value_by_path, data, keys) == _outcome(
        _common.get_value_by_path, data, keys
    )


def test_request_json_is_unchanged_with_the_fast_helper() -> None:
    contents = [
        {
            "role": "user",
            "parts": [{"text": "hi"}, {"inline_data": {"data": b"x", "mime_type": "image/png"}}],
        },
        {"role": "model", "parts": [{"text": "hello"}]},
    ]
    config = types.GenerateContentConfig(system_instruction="be kind", temperature=0.5)
    params = types._GenerateContentParameters(model="m", contents=contents, config=config)
    client = genai.Client(api_key="unused")._api_client
    genai_models.getv = _common.get_value_by_path  # type: ignore[attr-defined]
    try:
        expected = genai_models._GenerateContentParameters_to_mldev(client, params, None, params)
        assert gemini_speedups.install()
        assert genai_models.getv is fast_get_value_by_path  # type: ignore[attr-defined]
        actual = genai_models._GenerateContentParameters_to_mldev(client, params, None, params)
    finally:
        gemini_speedups.install()
    assert actual == expected
    first = actual["contents"][0]
    assert first["role"] == "user"
    assert first["parts"][0] == {"text": "hi"}
    assert first["parts"][1]["inlineData"].mime_type == "image/png"
    assert actual["systemInstruction"]["parts"] == [{"text": "be kind"}]


def _other_helper(data: Any, keys: list[str], *, default_value: Any = None) -> Any:
    return "something else"


@pytest.mark.parametrize(
    "also_the_original",
    [False, True],
    ids=["another-function-bound", "same-binding-different-answers"],
)
def test_a_changed_sdk_keeps_its_own_helper(
    monkeypatch: pytest.MonkeyPatch, also_the_original: bool
) -> None:
    if also_the_original:  # the module still binds "the" helper, but it answers differently
        monkeypatch.setattr(gemini_speedups, "_original", _other_helper)
    monkeypatch.setattr(genai_models, "getv", _other_helper)

    assert gemini_speedups.install() is False
    assert genai_models.getv is _other_helper  # type: ignore[attr-defined]


# -- the response helper ---------------------------------------------------------------------

_MODELS = [
    types.GenerateContentResponse,
    types.Candidate,
    types.Content,
    types.Part,
    types.GenerateContentResponseUsageMetadata,
]
# Keys of these models (names and camelCase aliases) and unknown ones, few enough that nested
# models, lists of them and unknown keys inside them come up often.
_KEYS = [
    "candidates",
    "content",
    "parts",
    "text",
    "thought",
    "usageMetadata",
    "usage_metadata",
    "promptTokenCount",
    "finishReason",
    "finish_reason",
    "role",
    "modelVersion",
    "unknownField",
    "x",
]
_response_leaves = st.none() | st.integers() | st.text(max_size=3) | st.booleans()
responses = st.recursive(
    _response_leaves,
    lambda children: (
        st.dictionaries(st.sampled_from(_KEYS), children, max_size=5)
        | st.lists(children, max_size=3)
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(
    index=st.integers(0, len(_MODELS) - 1),  # (hypothesis cannot print pydantic classes)
    data=st.dictionaries(st.sampled_from(_KEYS), responses),
)
def test_fast_response_helper_prunes_exactly_what_the_sdk_prunes(
    index: int, data: dict[str, Any]
) -> None:
    model = _MODELS[index]
    expected, actual = copy.deepcopy(data), copy.deepcopy(data)
    gemini_speedups._original_remove(model, expected)
    fast_remove_extra_fields(model, actual)
    assert actual == expected


def test_a_stream_chunk_parses_the_same_with_the_fast_response_helper() -> None:
    chunk = {
        "candidates": [
            {
                "content": {"parts": [{"text": "Hi", "newField": 1}], "role": "model"},
                "finishReason": "STOP",
                "unknown": {"x": 1},
            }
        ],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1, "future": 2},
    }
    assert gemini_speedups.install()
    assert _common._remove_extra_fields is fast_remove_extra_fields
    fast = types.GenerateContentResponse._from_response(response=copy.deepcopy(chunk), kwargs={})
    _common._remove_extra_fields = gemini_speedups._original_remove
    try:
        slow = types.GenerateContentResponse._from_response(
            response=copy.deepcopy(chunk), kwargs={}
        )
    finally:
        gemini_speedups.install()
    assert fast == slow
    assert fast.text == "Hi"


def test_a_changed_sdk_keeps_its_own_response_helper(monkeypatch: pytest.MonkeyPatch) -> None:
    def other(model: Any, response: dict[str, object]) -> None:
        response.clear()

    monkeypatch.setattr(_common, "_remove_extra_fields", other)
    assert gemini_speedups.install() is False
    assert _common._remove_extra_fields is other

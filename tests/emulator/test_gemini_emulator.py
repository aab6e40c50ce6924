"""The Gemini emulator, driven through the real google-genai async client."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from google import genai
from google.genai import errors, types
from hypothesis import given
from hypothesis import strategies as st

from bot.emulator.gemini import (
    IMAGE_TOKENS,
    LONG_ANSWER,
    Fault,
    GeminiEmulator,
    GeminiRequest,
    format_duration,
)
from bot.emulator.gemini.server import split_for_stream

# One emulator and one client for the module: building a genai.Client costs ~0.25 s
# (it loads the CA bundle), so tests share it and vary options per request instead.
pytestmark = pytest.mark.asyncio(loop_scope="module")

MODEL = "gemini-2.5-flash"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
USER_TEXT = b'{"contents": [{"role": "user", "parts": [{"text": "x"}]}]}'


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared() -> AsyncIterator[tuple[GeminiEmulator, genai.Client]]:
    async with GeminiEmulator() as emulator:
        made = emulator.client(timeout_ms=5_000)
        yield emulator, made
        await made.aio.aclose()


@pytest.fixture
def emu(shared: tuple[GeminiEmulator, genai.Client]) -> GeminiEmulator:
    shared[0].reset()
    return shared[0]


@pytest.fixture
def client(shared: tuple[GeminiEmulator, genai.Client], emu: GeminiEmulator) -> genai.Client:
    return shared[1]


async def ask(
    client: genai.Client,
    contents: Any = "hello",
    http_options: types.HttpOptions | None = None,
    **config: Any,
) -> Any:
    if http_options is not None:
        config["http_options"] = http_options
    return await client.aio.models.generate_content(
        model=MODEL,
        contents=contents,
        config=types.GenerateContentConfig(**config) if config else None,
    )


async def ask_stream(
    client: genai.Client, contents: Any = "hello", http_options: types.HttpOptions | None = None
) -> list[Any]:
    stream = await client.aio.models.generate_content_stream(
        model=MODEL,
        contents=contents,
        config=types.GenerateContentConfig(http_options=http_options),
    )
    return [chunk async for chunk in stream]


async def collect_texts(stream: AsyncIterator[Any], into: list[str]) -> None:
    async for chunk in stream:
        into.append(chunk.text)


async def post_raw(
    emu: GeminiEmulator, path: str, data: bytes, key: str | None, *, key_in_query: bool = False
) -> Any:
    headers = {"Content-Type": "application/json"}
    if key is not None and key_in_query:
        path = f"{path}?key={key}"
    elif key is not None:
        headers["x-goog-api-key"] = key
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{emu.base_url}{path}", data=data, headers=headers) as response,
    ):
        return response.status, await response.json()


# -- answers ---------------------------------------------------------------------------------


async def test_text_answer_with_usage(emu: GeminiEmulator, client: genai.Client) -> None:
    response = await ask(client, "What is the capital of France?")

    assert response.text == "You said: What is the capital of France?\n(turns: 1, images: 0)"
    usage = response.usage_metadata
    assert usage.prompt_token_count == 8  # 30 characters at ~4 per token
    assert usage.candidates_token_count == len(response.text) // 4 + 1
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    assert response.model_version == MODEL
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", response.response_id)
    assert emu.requests[-1].model == MODEL
    assert emu.requests[-1].api_key == emu.api_key


async def test_scripted_answers_come_first_in_order(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    emu.queue_answer("first")
    emu.queue_answer("second")

    assert [(await ask(client)).text for _ in range(3)] == [
        "first",
        "second",
        "You said: hello\n(turns: 1, images: 0)",
    ]


async def test_responder_may_be_async(emu: GeminiEmulator, client: genai.Client) -> None:
    async def shout(request: GeminiRequest) -> str:
        await asyncio.sleep(0)
        return request.last_user_text.upper()

    emu.responder = shout

    assert (await ask(client, "quiet please")).text == "QUIET PLEASE"


async def test_failing_responder_becomes_server_error(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    def broken(request: GeminiRequest) -> str:
        raise RuntimeError("responder bug")

    emu.responder = broken

    with pytest.raises(errors.ServerError):
        await ask(client)


async def test_system_instruction_and_generation_config_are_recorded(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    await ask(
        client,
        "hi",
        system_instruction="You are terse.",
        temperature=0.2,
        max_output_tokens=256,
        thinking_config=types.ThinkingConfig(thinking_budget=0),
    )

    sent = emu.requests[-1]
    assert sent.system_instruction == "You are terse."
    assert sent.generation_config["temperature"] == 0.2
    assert sent.generation_config["maxOutputTokens"] == 256
    assert sent.stream is False


async def test_max_output_tokens_cuts_the_answer(client: genai.Client) -> None:
    response = await ask(client, "a long one please", max_output_tokens=10)

    assert response.text == LONG_ANSWER[:40]
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS


async def test_thought_tokens_count_unless_thinking_is_off(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    emu.thoughts_tokens = 50

    thinking = (await ask(client)).usage_metadata
    silent = await ask(client, thinking_config=types.ThinkingConfig(thinking_budget=0))
    assert thinking.thoughts_token_count == 50
    assert thinking.total_token_count == (
        thinking.prompt_token_count + thinking.candidates_token_count + 50
    )
    assert silent.usage_metadata.thoughts_token_count is None


async def test_cached_tokens_are_part_of_the_prompt_and_at_most_all_of_it(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    emu.cached_tokens = 3
    some = (await ask(client, "a question long enough for more than three tokens")).usage_metadata
    emu.cached_tokens = 10_000
    whole = (await ask(client, "hi")).usage_metadata
    emu.cached_tokens = 0
    none = (await ask(client, "hi")).usage_metadata

    assert some.cached_content_token_count == 3 < some.prompt_token_count
    assert some.cache_tokens_details[0].token_count == 3
    assert whole.cached_content_token_count == whole.prompt_token_count
    assert none.cached_content_token_count is None


async def test_multi_turn_contents_are_recorded(emu: GeminiEmulator, client: genai.Client) -> None:
    history = [
        types.Content(role="user", parts=[types.Part(text="My name is Ada.")]),
        types.Content(role="model", parts=[types.Part(text="Hello Ada!")]),
        types.Content(role="user", parts=[types.Part(text="What is my name?")]),
    ]

    response = await ask(client, history)

    sent = emu.requests[-1]
    assert [turn["role"] for turn in sent.contents] == ["user", "model", "user"]
    assert sent.last_user_text == "What is my name?"
    assert response.text == "You said: What is my name?\n(turns: 3, images: 0)"


async def test_inline_image_is_decoded_and_billed(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    image = types.Part.from_bytes(data=PNG, mime_type="image/png")

    response = await ask(client, ["what is this?", image])

    assert emu.requests[-1].inline_data == [("image/png", PNG)]
    assert response.text == "You said: what is this?\n(turns: 1, images: 1)"
    assert response.usage_metadata.prompt_token_count == 4 + IMAGE_TOKENS


async def test_long_answer_has_a_code_fence_longer_than_a_discord_message(
    client: genai.Client,
) -> None:
    response = await ask(client, "give me a long answer")

    assert response.text == LONG_ANSWER
    fences = re.findall(r"^```(\w+)\n.*?^```$", response.text, flags=re.S | re.M)
    assert fences == ["python", "js"]
    python_block = re.search(r"^```python\n.*?^```$", response.text, flags=re.S | re.M)
    assert python_block is not None
    assert len(python_block.group(0)) > 2000


# -- streaming -------------------------------------------------------------------------------


async def test_stream_yields_chunks_that_join_to_the_answer(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    chunks = await ask_stream(client, "tell me something long")

    assert len(chunks) >= 3
    assert "".join(chunk.text for chunk in chunks) == LONG_ANSWER
    assert all(chunk.usage_metadata is None for chunk in chunks[:-1])
    assert chunks[-1].usage_metadata.candidates_token_count == len(LONG_ANSWER) // 4 + 1
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert emu.requests[-1].stream is True


async def test_short_answers_still_stream_in_several_chunks(client: genai.Client) -> None:
    chunks = await ask_stream(client, "hi")

    assert len(chunks) == 3
    assert "".join(chunk.text for chunk in chunks) == "You said: hi\n(turns: 1, images: 0)"


async def test_stream_spreads_latency_over_chunks(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    draws: list[float] = []

    def latency() -> float:
        draws.append(0.15)
        return 0.15

    emu.latency = latency
    started = time.monotonic()
    chunks = await ask_stream(client, "hi")

    assert len(chunks) == 3
    assert draws == [0.15]  # one draw per request, split across its chunks
    assert time.monotonic() - started >= 0.15


# -- errors and faults -----------------------------------------------------------------------


async def test_wrong_api_key_is_a_client_error_400(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    wrong_key = types.HttpOptions(headers={"x-goog-api-key": "not-the-key"})

    with pytest.raises(errors.ClientError) as caught:
        await ask(client, http_options=wrong_key)

    assert caught.value.code == 400
    assert caught.value.status == "INVALID_ARGUMENT"
    assert caught.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    assert emu.requests[-1].api_key == "not-the-key"


async def test_missing_api_key_is_permission_denied(emu: GeminiEmulator) -> None:
    status, body = await post_raw(
        emu, f"/v1beta/models/{MODEL}:generateContent", USER_TEXT, key=None
    )

    assert status == 403
    assert body["error"]["status"] == "PERMISSION_DENIED"


async def test_api_key_may_come_in_the_query(emu: GeminiEmulator) -> None:
    status, body = await post_raw(
        emu, f"/v1/models/{MODEL}:generateContent", USER_TEXT, emu.api_key, key_in_query=True
    )

    assert status == 200
    assert body["candidates"][0]["content"]["parts"][0]["text"].startswith("You said: x")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{not json", "Invalid JSON payload"),
        (b"[]", "Invalid JSON payload"),
        (b'{"contents": []}', "contents is not specified"),
        (b'{"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}', "valid role"),
        (b'{"contents": [{"role": "user", "parts": []}]}', "must not be empty"),
    ],
)
async def test_malformed_requests_are_invalid_argument(
    emu: GeminiEmulator, payload: bytes, message: str
) -> None:
    status, body = await post_raw(
        emu, f"/v1beta/models/{MODEL}:generateContent", payload, key=emu.api_key
    )

    assert status == 400
    assert body["error"]["status"] == "INVALID_ARGUMENT"
    assert message in body["error"]["message"]


@pytest.mark.parametrize(("status", "name"), [(500, "INTERNAL"), (503, "UNAVAILABLE")])
async def test_http_fault_is_a_server_error(
    emu: GeminiEmulator, client: genai.Client, status: int, name: str
) -> None:
    emu.queue_fault(Fault.http(status, count=2))
    emu.queue_answer("recovered")

    for _ in range(2):
        with pytest.raises(errors.ServerError) as caught:
            await ask(client)
        assert (caught.value.code, caught.value.status) == (status, name)
    assert (await ask(client)).text == "recovered"
    assert len(emu.requests) == 3


async def test_rate_limited_fault_carries_retry_delay(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    emu.queue_fault(Fault.rate_limited(retry_delay_s=12))

    with pytest.raises(errors.ClientError) as caught:
        await ask(client)

    assert caught.value.code == 429
    assert caught.value.status == "RESOURCE_EXHAUSTED"
    details = caught.value.details["error"]["details"]
    kinds = [detail["@type"].rsplit(".", 1)[-1] for detail in details]
    assert kinds == ["QuotaFailure", "Help", "RetryInfo"]
    assert details[-1]["retryDelay"] == "12s"
    assert emu.rate_limited_count == 1


async def test_rate_limited_fault_streams_are_refused_before_any_chunk(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    emu.queue_fault(Fault.rate_limited(retry_delay_s=0.5))

    with pytest.raises(errors.ClientError) as caught:
        await ask_stream(client)

    assert caught.value.details["error"]["details"][-1]["retryDelay"] == "0.500s"


async def test_hang_ends_in_client_timeout(emu: GeminiEmulator, client: genai.Client) -> None:
    emu.queue_fault(Fault.hang(count=2))
    impatient = types.HttpOptions(timeout=200)

    # aiohttp's total timeout surfaces as the builtin TimeoutError, unwrapped by google-genai.
    with pytest.raises(TimeoutError):
        await ask(client, http_options=impatient)
    with pytest.raises(TimeoutError):
        await ask_stream(client, http_options=impatient)
    emu.queue_answer("after the hang")
    assert (await ask(client)).text == "after the hang"


async def test_stop_does_not_wait_for_hung_requests() -> None:
    emu = GeminiEmulator()
    await emu.start()
    emu.queue_fault(Fault.hang())
    hung = asyncio.create_task(
        post_raw(emu, f"/v1beta/models/{MODEL}:generateContent", USER_TEXT, key=emu.api_key)
    )
    await emu.wait_for_requests(1)

    started = time.monotonic()
    await emu.stop()

    assert time.monotonic() - started < 2.0
    with pytest.raises(aiohttp.ClientError):
        await hung


async def test_safety_block_has_no_text_and_a_block_reason(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    emu.queue_fault(Fault.safety_block())

    response = await ask(client)

    assert response.text is None
    assert not response.candidates
    assert response.prompt_feedback.block_reason == types.BlockedReason.SAFETY


async def test_finish_safety_has_a_candidate_without_text(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    emu.queue_fault(Fault.finish_safety())

    response = await ask(client)

    assert response.text is None
    assert response.candidates[0].finish_reason == types.FinishReason.SAFETY


async def test_empty_fault_has_no_candidates(emu: GeminiEmulator, client: genai.Client) -> None:
    emu.queue_fault(Fault.empty())

    response = await ask(client)

    assert response.text is None
    assert response.candidates == []


async def test_broken_stream_fails_mid_iteration(emu: GeminiEmulator, client: genai.Client) -> None:
    emu.queue_fault(Fault.broken_stream())
    received: list[str] = []

    stream = await client.aio.models.generate_content_stream(model=MODEL, contents="a long one")
    with pytest.raises(aiohttp.ClientPayloadError):
        await collect_texts(stream, received)

    assert received == [LONG_ANSWER[: len(received[0])]]


async def test_broken_non_streamed_answer_is_a_payload_error(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    emu.queue_fault(Fault.broken_stream())

    with pytest.raises(aiohttp.ClientPayloadError):
        await ask(client)


async def test_stalled_stream_times_out_after_the_first_chunk(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    emu.queue_fault(Fault.stalled_stream())
    received: list[str] = []

    stream = await client.aio.models.generate_content_stream(
        model=MODEL,
        contents="hi",
        config=types.GenerateContentConfig(http_options=types.HttpOptions(timeout=200)),
    )
    # The HttpOptions timeout is aiohttp's *total* timeout: it covers reading the whole stream.
    with pytest.raises(TimeoutError):
        await collect_texts(stream, received)

    assert len(received) == 1


async def test_error_rate_is_deterministic_for_a_seed(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    async def failures() -> list[bool]:
        emu.error_rate = 0.3
        outcomes = []
        for _ in range(20):
            try:
                await ask(client)
                outcomes.append(False)
            except errors.ServerError:
                outcomes.append(True)
        return outcomes

    first = await failures()
    emu.reset()  # reseeds the random source
    again = await failures()

    assert first == again
    assert 0 < sum(first) < 20


async def test_fail_all_until_heal(emu: GeminiEmulator, client: genai.Client) -> None:
    emu.fail_all(503)
    for _ in range(3):
        with pytest.raises(errors.ServerError):
            await ask(client)

    emu.heal()

    assert (await ask(client)).text is not None


# -- quota, versions and other endpoints -----------------------------------------------------


async def test_rpm_limit_uses_fixed_minute_windows_of_the_clock(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    now = [600.0 + 45.0]  # 45 s into a minute window
    emu.clock = lambda: now[0]
    emu.rpm_limit = 2

    await ask(client)
    await ask(client)
    with pytest.raises(errors.ClientError) as caught:
        await ask(client)
    now[0] = 660.0  # the next window opens
    await ask(client)

    assert caught.value.code == 429
    assert caught.value.details["error"]["details"][-1]["retryDelay"] == "15s"
    assert emu.rate_limited_count == 1
    assert len(emu.requests) == 4


@pytest.mark.parametrize("version", ["v1", "v1beta", "v1alpha"])
async def test_any_api_version_segment(
    emu: GeminiEmulator, client: genai.Client, version: str
) -> None:
    response = await ask(client, http_options=types.HttpOptions(api_version=version))

    assert response.text is not None
    assert emu.requests[-1].api_version == version


async def test_model_info_and_count_tokens(client: genai.Client) -> None:
    model = await client.aio.models.get(model=MODEL)
    counted = await client.aio.models.count_tokens(model=MODEL, contents="12345678")

    assert model.name == f"models/{MODEL}"
    assert model.input_token_limit == 1_048_576
    assert counted.total_tokens == 2


async def test_wait_for_requests_wakes_on_arrival(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    waiter = asyncio.create_task(emu.wait_for_requests(2, timeout=5.0))
    await ask(client, "one")
    await ask(client, "two")

    seen = await waiter
    assert [request.last_user_text for request in seen] == ["one", "two"]
    with pytest.raises(TimeoutError):
        await emu.wait_for_requests(3, timeout=0.05)


async def test_recording_is_bounded() -> None:
    async with GeminiEmulator(max_recorded=5) as emu:
        for index in range(12):
            body = f'{{"contents": [{{"parts": [{{"text": "message {index}"}}]}}]}}'.encode()
            await post_raw(emu, f"/v1/models/{MODEL}:generateContent", body, key=emu.api_key)

    assert 5 <= len(emu.requests) <= 6
    assert emu.requests[-1].last_user_text == "message 11"


async def test_reset_restores_the_constructor_settings(emu: GeminiEmulator) -> None:
    emu.latency = 5.0
    emu.rpm_limit = 1
    emu.fail_all(500)
    emu.queue_answer("left over")

    emu.reset()

    assert emu.latency == 0.0
    assert emu.rpm_limit is None
    assert emu.pending_faults == 0
    assert emu.requests == []


@given(st.text(max_size=3000), st.integers(min_value=1, max_value=500))
async def test_stream_pieces_join_to_the_text(text: str, chunk_chars: int) -> None:
    pieces = split_for_stream(text, chunk_chars)

    assert "".join(pieces) == text
    assert len(pieces) >= min(3, len(text))
    assert all(pieces) or pieces == [""]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(12, "12s"), (0.5, "0.500s"), (1.25e-4, "0.000125s"), (3.000000001, "3.000000001s")],
)
async def test_retry_delay_uses_protobuf_duration_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text

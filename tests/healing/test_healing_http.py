"""POST /alerts over real HTTP: auth, limits, status codes, fast answers, fuzzed bodies."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.healing.actions import HEAL_ACTIONS, ActionRegistry
from bot.healing.http import alerts_handler, load_token
from bot.healing.receiver import HealReceiver
from bot.healing.testing import RecordingAction, sample_alert, sample_body, sample_payload

TOKEN = "s3cret-webhook-token"
INSTANCE = "127.0.0.1:9464"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}
INVALID = 'Bearer realm="alerts", error="invalid_token"'
LINGERING_S = 2.0  # as the ops server (bot.ops.server): aiohttp's default is 10 s


@dataclass
class Server:
    url: str
    session: aiohttp.ClientSession
    receiver: HealReceiver
    actions: dict[str, RecordingAction]
    shutting_down: list[bool]

    async def post(
        self, body: Any, *, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        sent = {**AUTH, **JSON} if headers is None else headers
        async with self.session.post(self.url, data=body, headers=sent) as response:
            data = await response.json(content_type=None)
            return response.status, data, dict(response.headers)

    def codes(self) -> dict[int, int]:
        return {k: v for k, v in self.receiver.stats.webhook_requests_total.items() if v}

    def ran(self) -> int:
        return sum(len(action.calls) for action in self.actions.values())


@asynccontextmanager
async def serve(
    *,
    token: str | None = TOKEN,
    allow_insecure_loopback: bool = False,
    max_body_bytes: int = 256 * 1024,
    body_timeout_s: float = 30.0,
    **receiver_kwargs: Any,
) -> AsyncIterator[Server]:
    actions = {name: RecordingAction(name) for name in HEAL_ACTIONS}
    receiver = HealReceiver(ActionRegistry(actions.values()), instance=INSTANCE, **receiver_kwargs)
    receiver.start()
    shutting_down = [False]
    app = web.Application()
    handler = alerts_handler(
        receiver,
        token=token,
        allow_insecure_loopback=allow_insecure_loopback,
        max_body_bytes=max_body_bytes,
        body_timeout_s=body_timeout_s,
        is_shutting_down=lambda: shutting_down[0],
    )
    app.router.add_post("/alerts", handler)
    runner = web.AppRunner(app, access_log=None, lingering_time=LINGERING_S)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as session:
            yield Server(f"http://{host}:{port}/alerts", session, receiver, actions, shutting_down)
    finally:
        await receiver.stop(grace_s=1)
        await runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with serve() as running:
        yield running


async def test_alertmanager_payload_is_accepted(server: Server) -> None:
    status, data, _ = await server.post(sample_body())
    assert status == 202
    assert data["queued"] == 1
    assert data["decisions"][0]["decision"] == "apply"
    await server.receiver.join()
    assert server.actions["memory"].calls == [("apply", "4f6a1c2b3d4e5f60")]
    assert server.codes() == {202: 1}


async def test_202_arrives_while_the_action_still_runs(server: Server) -> None:
    gate = server.actions["memory"].gate = asyncio.Event()
    status, _, _ = await server.post(sample_body())
    # The action cannot finish before the gate opens, and the gate opens only now.
    assert status == 202
    await server.actions["memory"].started.wait()
    assert server.actions["memory"].own.current == 1
    assert server.receiver.stats.actions_total[("memory", "ok")] == 0
    gate.set()
    await server.receiver.join()
    assert server.receiver.stats.actions_total[("memory", "ok")] == 1


async def test_duplicate_delivery_runs_once(server: Server) -> None:
    for _ in range(3):
        status, _, _ = await server.post(sample_body())
        assert status == 202
    await server.receiver.join()
    assert server.actions["memory"].calls == [("apply", "4f6a1c2b3d4e5f60")]
    assert server.receiver.stats.actions_total[("memory", "duplicate")] == 2


async def test_other_instance_is_ignored_and_counted(server: Server) -> None:
    body = sample_body(sample_alert(instance="10.1.2.3:9464"))
    status, data, _ = await server.post(body)
    assert status == 202
    assert data["decisions"][0]["decision"] == "ignored"
    await server.receiver.join()
    assert server.ran() == 0
    assert server.receiver.stats.alerts_ignored_total["other_instance"] == 1


@pytest.mark.parametrize(
    ("headers", "challenge"),
    [
        (JSON, 'Bearer realm="alerts"'),
        ({**JSON, "Authorization": "Bearer wrong-token"}, INVALID),
        ({**JSON, "Authorization": f"Basic {TOKEN}"}, INVALID),
        ({**JSON, "Authorization": f"Bearer {TOKEN}x"}, INVALID),
        ({**JSON, "Authorization": "Bearer"}, INVALID),
    ],
)  # fmt: skip
async def test_wrong_auth_is_401_and_runs_nothing(
    server: Server,
    headers: dict[str, str],
    challenge: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    status, data, response_headers = await server.post(sample_body(), headers=headers)
    assert status == 401
    assert "error" in data
    assert response_headers["WWW-Authenticate"] == challenge
    await server.receiver.join()
    assert server.ran() == 0
    assert server.codes() == {401: 1}
    assert TOKEN not in caplog.text
    assert "wrong-token" not in caplog.text


async def test_bearer_scheme_is_case_insensitive(server: Server) -> None:
    status, _, _ = await server.post(
        sample_body(), headers={**JSON, "Authorization": f"bearer {TOKEN}"}
    )
    assert status == 202


async def test_no_token_means_404() -> None:
    async with serve(token=None) as running:
        status, data, _ = await running.post(sample_body(), headers=JSON)
        assert status == 404
        assert "ALERT_WEBHOOK_TOKEN" in data["error"]
        await running.receiver.join()
        assert running.ran() == 0
        assert running.codes() == {404: 1}


async def test_insecure_loopback_accepts_loopback_without_token() -> None:
    async with serve(token=None, allow_insecure_loopback=True) as running:
        status, _, _ = await running.post(sample_body(), headers=JSON)
        assert status == 202
        await running.receiver.join()
        assert running.ran() == 1


async def test_a_configured_token_is_required_even_on_loopback() -> None:
    async with serve(allow_insecure_loopback=True) as running:
        status, _, _ = await running.post(sample_body(), headers=JSON)
        assert status == 401


async def test_insecure_loopback_refuses_other_addresses() -> None:
    receiver = HealReceiver(ActionRegistry([RecordingAction("memory")]), instance=INSTANCE)
    receiver.start()
    handler = alerts_handler(receiver, token=None, allow_insecure_loopback=True)
    transport = mock.Mock()
    transport.get_extra_info.return_value = ("192.0.2.10", 40000)
    request = make_mocked_request("POST", "/alerts", headers=JSON, transport=transport)
    response = await handler(request)
    assert response.status == 403
    assert receiver.stats.webhook_requests_total[403] == 1


@pytest.mark.parametrize(
    ("remote", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True),
     ("10.0.0.1", False), ("::ffff:10.0.0.1", False), ("/run/bot.sock", False), (None, False)],
)  # fmt: skip
def test_loopback_detection(remote: str | None, loopback: bool) -> None:
    from bot.healing.http import _is_loopback

    assert _is_loopback(remote) is loopback


async def test_body_over_the_limit_is_413() -> None:
    async with serve(max_body_bytes=1024) as running:
        data = sample_payload()
        data["commonAnnotations"] = {"pad": "x" * 2000}
        status, answer, _ = await running.post(json.dumps(data).encode())
        assert status == 413
        assert "1024 bytes" in answer["error"]
        assert running.ran() == 0


async def test_chunked_body_over_the_limit_is_413_without_content_length() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b" " * 1024

    async with serve(max_body_bytes=4096) as running:
        status, _, _ = await running.post(chunks())
        assert status == 413
        # The default limit: 256 KiB of whitespace around a valid payload passes, one more fails.
    async with serve() as running:
        body = sample_body()
        status, _, _ = await running.post(body + b" " * (256 * 1024 - len(body)))
        assert status == 202
        status, _, _ = await running.post(body + b" " * (256 * 1024 - len(body) + 1))
        assert status == 413


async def test_bad_payload_is_400_with_a_reason(server: Server) -> None:
    data = sample_payload()
    data["version"] = "3"
    status, answer, _ = await server.post(json.dumps(data).encode())
    assert (status, answer) == (400, {"error": 'version must be "4", got "3"'})
    status, answer, _ = await server.post(b'{"version": "4"')
    assert status == 400
    assert answer["error"].startswith("body is not valid JSON")
    assert server.ran() == 0
    assert server.codes() == {400: 2}


async def test_content_type_is_lenient_while_the_body_parses(server: Server) -> None:
    status, _, _ = await server.post(sample_body(), headers={**AUTH, "Content-Type": "text/plain"})
    assert status == 202
    status, answer, _ = await server.post(b"alert!", headers={**AUTH, "Content-Type": "text/plain"})
    assert status == 415
    assert answer["error"] == "expected application/json, got text/plain"
    status, _, _ = await server.post(b"alert!", headers={**AUTH, "Content-Type": "a/b+json"})
    assert status == 400


async def test_503_while_shutting_down(server: Server) -> None:
    server.shutting_down[0] = True
    status, data, _ = await server.post(sample_body())
    assert (status, data) == (503, {"error": "shutting down"})
    server.shutting_down[0] = False
    await server.receiver.stop()
    status, _, _ = await server.post(sample_body())
    assert status == 503
    assert server.ran() == 0
    assert server.codes() == {503: 2}


async def test_503_when_the_backlog_is_full() -> None:
    async with serve(max_pending=1) as running:
        gate = running.actions["memory"].gate = asyncio.Event()
        body = sample_body(sample_alert(), sample_alert(heal="disk", fingerprint="fp2"))
        status, data, _ = await running.post(body)
        assert status == 503
        assert [d["decision"] for d in data["decisions"]] == ["apply", "rejected"]
        gate.set()
        await running.receiver.join()
        status, data, _ = await running.post(body)  # Alertmanager retries the 5xx
        assert status == 202
        assert [d["decision"] for d in data["decisions"]] == ["duplicate", "apply"]
        await running.receiver.join()
        assert running.actions["disk"].calls == [("apply", "fp2")]


async def test_unexpected_errors_are_a_counted_500(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*_: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(server.receiver, "submit", explode)
    status, data, _ = await server.post(sample_body())
    assert (status, data) == (500, {"error": "internal error"})
    assert server.codes() == {500: 1}


# -- fuzzing ---------------------------------------------------------------------------------

FUZZ_LIMIT = 4096
text = st.text(max_size=12)
labels = st.dictionaries(text, text, max_size=4)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
alerts = st.builds(
    lambda heal, instance, status, fingerprint, extra, minute: {
        **sample_alert(
            heal=heal,
            instance=instance,
            status=status,
            fingerprint=fingerprint,
            starts_at=f"2024-05-01T10:{minute:02d}:00Z",
        ),
        "extra": extra,
    },
    st.sampled_from([*HEAL_ACTIONS, "reboot", None]),
    st.sampled_from([INSTANCE, "10.0.0.1:9464", None]),
    st.sampled_from(["firing", "resolved"]),
    st.text(alphabet="0123456789abcdef", min_size=1, max_size=16),
    labels,
    st.integers(0, 59),
)
valid_bodies = st.lists(alerts, max_size=5).map(
    lambda chosen: json.dumps(
        sample_payload(*chosen) if chosen else {**sample_payload(), "alerts": []}
    ).encode()
)


def mutate_types(body: bytes, key: str, value: Any) -> bytes:
    data = json.loads(body)
    target = data["alerts"][0] if key.startswith("alert.") and data["alerts"] else data
    target[key.removeprefix("alert.")] = value
    return json.dumps(data).encode()


wrong_types = st.builds(
    mutate_types,
    valid_bodies,
    st.sampled_from(
        ["version", "status", "alerts", "truncatedAlerts", "groupLabels", "alert.labels",
         "alert.status", "alert.startsAt", "alert.fingerprint", "alert.annotations"]
    ),
    json_values,
)  # fmt: skip
truncated = st.builds(
    lambda body, cut: body[: cut % max(len(body), 1)], valid_bodies, st.integers(0)
)
wrong_version = st.builds(
    lambda body, version: body.replace(
        b'"version": "4"', b'"version": ' + json.dumps(version).encode()
    ),
    valid_bodies,
    json_values.filter(lambda v: v != "4"),
)
huge = st.builds(
    lambda body, n: body + b" " * n, valid_bodies, st.integers(FUZZ_LIMIT, 3 * FUZZ_LIMIT)
)
bodies = st.one_of(
    valid_bodies, wrong_types, truncated, wrong_version, huge, st.binary(max_size=FUZZ_LIMIT * 2)
)


@pytest.fixture
async def fuzz_server() -> AsyncIterator[Server]:
    async with serve(max_body_bytes=FUZZ_LIMIT, cooldown_s=0, max_pending=10_000) as running:
        yield running


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies)
async def test_fuzzed_bodies_never_crash_the_handler(fuzz_server: Server, body: bytes) -> None:
    before = sum(fuzz_server.receiver.stats.webhook_requests_total.values())
    status, data, _ = await fuzz_server.post(body)
    assert status in (202, 400, 413), data
    assert ("error" in data) is (status != 202)
    assert len(body) <= FUZZ_LIMIT or status == 413
    assert sum(fuzz_server.receiver.stats.webhook_requests_total.values()) == before + 1
    assert fuzz_server.receiver.stats.webhook_requests_total[500] == 0


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=valid_bodies)
async def test_fuzzed_bodies_without_auth_run_nothing(fuzz_server: Server, body: bytes) -> None:
    status, _, _ = await fuzz_server.post(body, headers=JSON)
    assert status == 401
    await fuzz_server.receiver.join()
    assert fuzz_server.ran() == 0


# -- token loading ---------------------------------------------------------------------------


def test_load_token_from_setting_or_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  file-token\n")
    assert load_token(" env-token ", None) == "env-token"
    assert load_token(None, path) == "file-token"
    assert load_token("", path) == "file-token"  # an empty variable counts as unset
    assert load_token(None, None) is None
    assert load_token("   ", None) is None


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: ("env-token", p / "token"), "both set"),
        (lambda p: (None, p / "missing"), "is unreadable"),
        (lambda p: (None, p / "empty"), "is empty"),
        (lambda p: (None, p / "binary"), "is unreadable"),
        (lambda p: ("two words", None), "one word"),
    ],
)
def test_load_token_errors_say_what_to_do(
    tmp_path: Path, make: Callable[[Path], tuple[str | None, Path | None]], message: str
) -> None:
    (tmp_path / "token").write_text("file-token")
    (tmp_path / "empty").write_text(" \n")
    (tmp_path / "binary").write_bytes(b"\xff\xfe")
    token, path = make(tmp_path)
    with pytest.raises(ValueError, match=message):
        load_token(token, path)

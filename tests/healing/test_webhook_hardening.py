"""POST /alerts with hostile payloads (issue #16 item 8), over real HTTP: a newline in any field
does not forge a log line, a 200 KB label is cut in logs and answers, and a flood of large
payloads neither holds the event loop for long nor writes a log line per alert."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.healing.testing import sample_alert, sample_payload
from tests.healing.test_healing_http import AUTH, INSTANCE, JSON, serve

ROOT = Path(__file__).resolve().parents[2]
LONG = 200 * 1024
MAX_LINE = 2_000


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name.startswith("bot")]


def assert_one_line_each(caplog: pytest.LogCaptureFixture) -> None:
    for message in messages(caplog):
        assert "\n" not in message and "\r" not in message, message[:300]
        assert len(message) <= MAX_LINE, message[:300]


def alert_with(**changes: Any) -> dict[str, Any]:
    alert = sample_alert()
    labels = changes.pop("labels", {})
    alert["labels"] = {**alert["labels"], **labels}
    alert.update(changes)
    return alert


FORGED = "x\n2026-01-01 00:00:00 ERROR bot.app: forged line\r\n"
HOSTILE_ALERTS = [
    alert_with(fingerprint=FORGED),
    alert_with(fingerprint="f1", labels={"alertname": FORGED}),
    alert_with(fingerprint="f2", labels={"instance": FORGED}),
    alert_with(fingerprint="f3", labels={"heal": FORGED}),
    alert_with(fingerprint="f4", labels={FORGED: "v"}, annotations={FORGED: FORGED}),
    alert_with(fingerprint="f5", status="resolved"),
]


@pytest.mark.parametrize("alert", HOSTILE_ALERTS, ids=range(len(HOSTILE_ALERTS)))
async def test_a_newline_in_the_payload_does_not_forge_a_log_line(
    alert: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve(cooldown_s=0) as server:
        status, _, _ = await server.post(json.dumps(sample_payload(alert)))
        assert status in (200, 202)
        await server.receiver.join()
    assert messages(caplog)
    assert_one_line_each(caplog)
    assert "\nforged" not in caplog.text and "\n2026-01-01" not in caplog.text


async def test_a_forgotten_heal_logs_its_fingerprint_escaped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve(cooldown_s=0, dedup_capacity=1) as server:
        first = alert_with(fingerprint=FORGED)
        second = alert_with(fingerprint="other", labels={"heal": "response_time"})
        for alert in (first, second):
            status, _, _ = await server.post(json.dumps(sample_payload(alert)))
            assert status == 202
        await server.receiver.join()
    assert any("forgetting" in message for message in messages(caplog))
    assert_one_line_each(caplog)


def bad_key_payload() -> dict[str, Any]:
    alert = sample_alert()
    alert["labels"] = {**alert["labels"], "k" * LONG: 1}  # a wrong type under a huge key
    return sample_payload(alert)


@pytest.mark.parametrize(
    "payload",
    [
        sample_payload(alert_with(labels={"instance": "i" * LONG})),
        sample_payload(alert_with(labels={"heal": "h" * LONG})),
        sample_payload(alert_with(fingerprint="f" * LONG)),
        sample_payload(alert_with(labels={"alertname": "a" * LONG})),
        bad_key_payload(),
    ],
    ids=["instance", "heal", "fingerprint", "alertname", "bad-key"],
)
async def test_a_200_kb_label_is_cut_in_logs_and_in_the_answer(
    payload: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve(cooldown_s=0, max_body_bytes=1024 * 1024) as server:
        body = json.dumps(payload).encode()
        assert LONG < len(body) < 1024 * 1024
        async with server.session.post(server.url, data=body, headers={**AUTH, **JSON}) as answer:
            assert answer.status in (202, 400)
            text = await answer.text()
        await server.receiver.join()
    assert_one_line_each(caplog)
    assert len(text) < 20_000, "the answer echoes the 200 KB value"


async def test_a_body_that_stalls_gets_408_and_runs_nothing() -> None:
    async with serve(body_timeout_s=0.5) as server:
        host, port = server.url.removeprefix("http://").split("/")[0].split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        head = (
            "POST /alerts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {AUTH['Authorization'].split()[1]}\r\n"
            "Content-Length: 1000\r\n\r\n"
        )
        writer.write(head.encode() + b'{"version": "4"')  # and then nothing more
        await writer.drain()
        started = time.monotonic()
        answer = await asyncio.wait_for(reader.readline(), 10)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - started < 5
        writer.close()
        assert server.codes() == {408: 1}
        assert server.ran() == 0


def flood_body(index: int, alerts: int) -> bytes:
    chosen = [
        sample_alert(
            fingerprint=f"{index:04x}{n:04x}",
            heal="memory" if n % 2 else "no-such-action",
            instance=INSTANCE if n % 3 else "10.9.9.9:9464",
        )
        for n in range(alerts)
    ]
    return json.dumps(sample_payload(*chosen)).encode()


def post_all(url: str, requests: int, alerts: int) -> list[int]:
    """The flood, as its own process runs it (`python -m` on this module)."""

    async def run() -> list[int]:
        bodies = [flood_body(i, alerts) for i in range(requests)]
        connector = aiohttp.TCPConnector(limit=requests)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(body: bytes) -> int:
                async with session.post(url, data=body, headers={**AUTH, **JSON}) as answer:
                    await answer.read()
                    return answer.status

            return list(await asyncio.gather(*(one(body) for body in bodies)))

    return asyncio.run(run())


async def flood(url: str, requests: int, alerts: int) -> list[int]:
    """Post the flood from another process, so that the client's work (and its hold on the
    GIL) is not counted as the server's loop being blocked."""
    root = ROOT
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.healing.test_webhook_hardening",
        url,
        str(requests),
        str(alerts),
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    return [int(code) for code in out.split()]


async def test_a_flood_of_large_payloads_keeps_the_loop_responsive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    requests, alerts = 120, 300
    caplog.set_level(logging.INFO)
    async with serve(max_pending=64) as server:
        loop = asyncio.get_running_loop()
        worst = 0.0
        done = False

        async def tick() -> None:
            nonlocal worst
            while not done:
                before = loop.time()
                await asyncio.sleep(0.005)
                worst = max(worst, loop.time() - before - 0.005)

        ticker = asyncio.create_task(tick())
        started = time.perf_counter()
        codes = await flood(server.url, requests, alerts)
        elapsed = time.perf_counter() - started
        done = True
        await ticker
        await server.receiver.join()
    info = [m for m in messages(caplog)]
    print(
        f"\n{requests} x {alerts} alerts: {elapsed:.2f}s, worst loop block {worst * 1000:.0f} ms, "
        f"{len(info)} log lines, codes {sorted(set(codes))}"
    )
    assert set(codes) <= {202, 503}, codes
    assert len(info) <= 3 * requests, f"{len(info)} log lines for {requests} requests"
    # Before the fix: 5.7-12.4 s held and 36k log lines. After: 0.2-0.45 s on a 2-core machine
    # with a load of 10 (most of it time the process was not scheduled), 121 lines.
    assert worst < 1.0, f"the loop was held {worst * 1000:.0f} ms"


if __name__ == "__main__":
    print(*post_all(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))

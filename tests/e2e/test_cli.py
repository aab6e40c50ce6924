"""The command line as an operator meets it: config mistakes, `check`, and the demo."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bot.emulator.discord import DiscordEmulator
from bot.emulator.gemini import GeminiEmulator

SETTING_PREFIXES = ("DISCORD_", "GEMINI_", "GOOGLE_", "OTEL_", "OPS_", "LOG_")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
    env.update(extra)
    return env


def _bot(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_run_without_tokens_says_what_to_set(tmp_path: Path) -> None:
    result = _bot(["run"], tmp_path)

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "DISCORD_TOKEN" in lines[0] and "GEMINI_API_KEY" in lines[0]
    assert "demo" in lines[0]
    assert "Traceback" not in result.stderr


def test_malformed_setting_is_one_readable_line(tmp_path: Path) -> None:
    result = _bot(["run"], tmp_path, OPS_PORT="not-a-port", DISCORD_TOKEN="x.y.z")

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "OPS_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_secrets_never_appear_in_errors(tmp_path: Path) -> None:
    result = _bot(["run"], tmp_path, DISCORD_TOKEN="not-a-token-SECRET", GEMINI_API_KEY="k-SECRET")

    assert result.returncode == 2
    assert "SECRET" not in result.stderr + result.stdout


async def test_check_accepts_good_tokens_and_reports_bad_ones(
    tmp_path: Path, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    env = {
        "DISCORD_REST_URL": discord.rest_url,
        "GEMINI_BASE_URL": gemini.base_url,
        "DISCORD_TOKEN": discord.token,
        "GEMINI_API_KEY": gemini.api_key,
    }
    good = await _async_bot(["check"], tmp_path, env)
    bad = await _async_bot(["check"], tmp_path, {**env, "GEMINI_API_KEY": "wrong"})

    assert good.returncode == 0, good.stdout + good.stderr
    assert bad.returncode == 3
    assert "GEMINI_API_KEY" in bad.stdout and "rejected" in bad.stdout
    assert "wrong" not in bad.stdout


async def _async_bot(
    args: list[str], cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    # The emulators run on this test's event loop, so the child must not block it.
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        cwd=cwd,
        env=_env(**env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


@pytest.mark.timeout(90)
def test_demo_holds_conversations_and_stops_cleanly(tmp_path: Path) -> None:
    result = _bot(
        ["demo", "--duration", "6", "--rate", "2", "--users", "3"], tmp_path, OPS_PORT="0"
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert "connected to the Discord emulator" in result.stdout
    turns = [line for line in result.stdout.splitlines() if line.strip().startswith("→ bot")]
    assert len(turns) >= 3
    assert "(no reply in time)" not in result.stdout
    assert "stopped after" in result.stdout
    assert "Traceback" not in result.stderr


def test_ops_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _bot(["demo", "--duration", "1"], tmp_path, OPS_PORT=str(port))

    assert result.returncode == 2
    assert "OPS_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_misspelt_setting_is_an_error_for_check_with_the_nearest_name(tmp_path: Path) -> None:
    """Issue #17 part 4: GEMINI_RATE_LIMT_RPM=5 used to be ignored without a word."""
    (tmp_path / ".env").write_text("GEMINI_MODLE=gemini-2.5-pro\nOTEL_SERVICE_NAME=mine\n")
    result = _bot(
        ["check"], tmp_path, GEMINI_RATE_LIMT_RPM="5", DISCORD_TOKEN="x.y.z", GEMINI_API_KEY="k"
    )

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "error: unknown setting GEMINI_RATE_LIMT_RPM in the environment: "
        "did you mean GEMINI_RATE_LIMIT_RPM?",
        "error: unknown setting GEMINI_MODLE in .env: did you mean GEMINI_MODEL?",
    ]


def test_a_misspelt_setting_is_a_warning_when_running(tmp_path: Path) -> None:
    result = _bot(["run"], tmp_path, GEMINI_RATE_LIMT_RPM="5")

    assert result.returncode == 2  # for the missing tokens, not for the typo
    assert "did you mean GEMINI_RATE_LIMIT_RPM?" in result.stderr
    assert "DISCORD_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_that_cannot_reach_discord_or_gemini_says_so_with_its_own_code(
    tmp_path: Path,
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        result = _bot(
            ["check"],
            tmp_path,
            DISCORD_REST_URL=f"http://127.0.0.1:{port}",
            GEMINI_BASE_URL=f"http://127.0.0.1:{port}",
            DISCORD_TOKEN="x.y.z",
            GEMINI_API_KEY="k",
        )

    assert result.returncode == 4, result.stdout + result.stderr
    assert result.stdout.count("could not verify") == 2


def _one_clear_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line.lower()]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_a_data_dir_that_cannot_be_used_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("in the way")
    result = _bot(["demo", "--duration", "1"], tmp_path, DATA_DIR=str(tmp_path / "a-file" / "d"))
    line = _one_clear_line(result, 2)
    assert "DATA_DIR" in line and "Not a directory" in line


def test_an_ops_host_that_does_not_exist_names_ops_host(tmp_path: Path) -> None:
    result = _bot(["demo", "--duration", "1"], tmp_path, OPS_HOST="not.a.host")
    line = _one_clear_line(result, 2)
    assert "set OPS_HOST" in line


@pytest.mark.parametrize(
    "args",
    [["--users", "-2"], ["--rate", "0"], ["--duration", "-5"], ["--faults", "slow:10+0"]],
)
def test_demo_refuses_arguments_that_make_no_sense(tmp_path: Path, args: list[str]) -> None:
    result = _bot(["demo", *args], tmp_path)
    line = _one_clear_line(result, 2)
    assert args[0] in line


def test_loadtest_explains_a_latency_without_a_colon(tmp_path: Path) -> None:
    result = _bot(["loadtest", "--gemini-latency", "bogus"], tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "after the colon" not in result.stderr
    assert "fixed:0.2" in result.stderr


@pytest.mark.parametrize("where", ["missing-folder/out.csv", "."])
def test_export_to_a_path_it_cannot_write_is_one_line(tmp_path: Path, where: str) -> None:
    result = _bot(["export", "--output", str(tmp_path / where)], tmp_path)
    line = _one_clear_line(result, 2)
    assert "--output" in line


def test_export_reads_only_and_never_changes_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "bot.db").write_bytes(b"this is not a database" * 100)
    before = {p.name: p.read_bytes() for p in data.iterdir()}

    result = _bot(["export"], tmp_path, DATA_DIR=str(data))

    line = _one_clear_line(result, 1)
    assert "cannot be read" in line
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before


async def test_a_rejected_token_is_one_line_and_leaks_no_session(
    tmp_path: Path, discord: DiscordEmulator
) -> None:
    env = {
        "DISCORD_REST_URL": discord.rest_url,
        "DISCORD_TOKEN": "MTIzNDU2Nzg5MDEyMzQ1Njc4.AAAAAA.not-the-emulators",
        "GEMINI_API_KEY": "k",
        "OPS_PORT": "0",
    }
    result = await _async_bot(["run"], tmp_path, env)

    assert result.returncode == 2, result.stderr
    assert "Discord rejected DISCORD_TOKEN" in result.stderr
    assert "Unclosed" not in result.stderr
    assert "Traceback" not in result.stderr


def test_discord_unreachable_at_start_is_one_line_with_its_own_code(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening
        result = _bot(
            ["run"],
            tmp_path,
            DISCORD_REST_URL=f"http://127.0.0.1:{port}",
            DISCORD_TOKEN="MTIzNDU2Nzg5MDEyMzQ1Njc4.AAAAAA.xxxx",
            GEMINI_API_KEY="k",
            OPS_PORT="0",
        )

    line = _one_clear_line(result, 69)
    assert "cannot reach Discord at DISCORD_REST_URL" in line
    assert "Unclosed" not in result.stderr


async def test_intents_refused_at_the_first_identify_exit_78_with_the_fix(
    tmp_path: Path, discord: DiscordEmulator
) -> None:
    """Message Content not switched on: Discord closes the first IDENTIFY with 4014."""
    discord.disallow_intents(1 << 15)  # MESSAGE_CONTENT
    env = {
        "DISCORD_REST_URL": discord.rest_url,
        "DISCORD_TOKEN": discord.token,
        "GEMINI_API_KEY": "k",
        "OPS_PORT": "0",
    }
    result = await _async_bot(["run"], tmp_path, env)

    line = _one_clear_line(result, 78)
    assert "close code 4014" in line and "Message Content" in line
    assert "Unclosed" not in result.stderr


async def test_export_of_a_stopped_bots_database_leaves_data_dir_as_it_was(
    tmp_path: Path,
) -> None:
    """A read-only connection still creates -wal and -shm files beside a WAL database."""
    from bot.store import SqliteStore

    data = tmp_path / "data"
    async with SqliteStore(data / "bot.db") as store:
        await store.set_many({"history:x": b"not a point"})
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    assert set(before) == {"bot.db"}

    result = await _async_bot(["export"], tmp_path, {"DATA_DIR": str(data)})

    assert result.returncode == 0, result.stderr
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before

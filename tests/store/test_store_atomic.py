"""atomic_write_bytes: all of the new content or all of the old, never a mix."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bot.store.atomic import atomic_write_bytes, atomic_write_bytes_async


def test_writes_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "credentials"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["credentials"]  # no temp file left behind


def test_mode_can_be_chosen(tmp_path: Path) -> None:
    target = tmp_path / "public.txt"
    atomic_write_bytes(target, b"x", mode=0o644)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_a_failed_replace_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "credentials"
    target.write_bytes(b"old")

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["credentials"]


async def test_async_variant(tmp_path: Path) -> None:
    target = tmp_path / "f"
    await atomic_write_bytes_async(target, b"data")
    assert target.read_bytes() == b"data"

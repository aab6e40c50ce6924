"""The shape of the code base that import-linter cannot check: module sizes.

The import rules themselves (layers, no cycles, hikari only in bot.discord, google-genai only in
the Gemini adapter, the app built only by the entry points) are import-linter contracts in
pyproject.toml, checked by `make lint`.
"""

from __future__ import annotations

from pathlib import Path

BOT = Path(__file__).resolve().parents[1] / "bot"
MAX_LINES = 800


def test_no_runtime_module_is_over_800_lines() -> None:
    sizes = {
        path.relative_to(BOT.parent).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in BOT.rglob("*.py")
        if "emulator" not in path.relative_to(BOT).parts
    }
    assert len(sizes) > 50, "the package was not found where the test expects it"
    too_big = {name: lines for name, lines in sizes.items() if lines > MAX_LINES}
    assert not too_big, f"split these modules (over {MAX_LINES} lines): {too_big}"

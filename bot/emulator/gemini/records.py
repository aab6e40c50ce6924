"""What the emulator saw: one frozen record per request."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GeminiRequest", "get_field"]

_CAMEL_HUMP = re.compile(r"(?<!^)(?=[A-Z])")


def get_field(obj: Any, name: str) -> Any:
    """Read a proto-JSON field by its lowerCamel name or its snake_case name.

    Google's parsers accept both spellings, and google-genai sends a mix
    (`inlineData` with `mime_type` inside, `thinkingConfig` with `thinking_budget`).
    """
    if not isinstance(obj, dict):
        return None
    if name in obj:
        return obj[name]
    return obj.get(_CAMEL_HUMP.sub("_", name).lower())


def _texts(content: Any) -> list[str]:
    """Text parts of one Content object, skipping anything malformed."""
    if not isinstance(content, dict):
        return []
    parts = get_field(content, "parts")
    if not isinstance(parts, list):
        return []
    return [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]


def _decode_base64(data: Any) -> bytes:
    """Decode standard or URL-safe base64, padded or not (the SDK sends URL-safe)."""
    if not isinstance(data, str):
        return b""
    text = data.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return b""


@dataclass(frozen=True)
class GeminiRequest:
    """One generation request as received: the parsed JSON body plus where it went."""

    model: str
    api_version: str
    stream: bool
    body: dict[str, Any] = field(hash=False)
    api_key: str
    received_at: float

    @property
    def contents(self) -> list[dict[str, Any]]:
        """The conversation turns, each `{"role": ..., "parts": [...]}`."""
        contents = get_field(self.body, "contents")
        if not isinstance(contents, list):
            return []
        return [c for c in contents if isinstance(c, dict)]

    @property
    def system_instruction(self) -> str | None:
        """Text of `systemInstruction`, parts joined by newlines, or None when absent."""
        instruction = get_field(self.body, "systemInstruction")
        if instruction is None:
            return None
        return "\n".join(_texts(instruction))

    @property
    def generation_config(self) -> dict[str, Any]:
        """The `generationConfig` object (empty when the client sent none)."""
        config = get_field(self.body, "generationConfig")
        return config if isinstance(config, dict) else {}

    @property
    def last_user_text(self) -> str:
        """Text of the last user turn, parts joined by newlines ("" when it has none)."""
        for content in reversed(self.contents):
            # The API treats a turn without a role as a user turn.
            if content.get("role", "user") == "user":
                return "\n".join(_texts(content))
        return ""

    @property
    def inline_data(self) -> list[tuple[str, bytes]]:
        """Every inline part of every turn as `(mime_type, decoded bytes)`, in order."""
        found: list[tuple[str, bytes]] = []
        for content in self.contents:
            parts = get_field(content, "parts")
            for part in parts if isinstance(parts, list) else []:
                blob = get_field(part, "inlineData")
                if isinstance(blob, dict):
                    mime_type = str(get_field(blob, "mimeType") or "")
                    found.append((mime_type, _decode_base64(get_field(blob, "data"))))
        return found

    @property
    def image_count(self) -> int:
        """How many inline images the request carried."""
        return sum(1 for mime, _ in self.inline_data if mime.startswith("image/"))

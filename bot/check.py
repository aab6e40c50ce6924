"""`python -m bot check`: are the settings valid, and do Discord and Gemini accept the tokens?"""

from __future__ import annotations

import aiohttp

from bot.config import Settings

__all__ = ["run_check"]

EXIT_OK, EXIT_REJECTED = 0, 3


async def _probe(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[str, bool]:
    """("ok" | "rejected (401)" | "unreachable: ...", accepted-or-unknown)."""
    try:
        async with session.get(url, headers=headers) as response:
            if response.status == 200:
                return "ok", True
            return f"rejected ({response.status})", False
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"not reachable from here ({type(exc).__name__}); not checked", True


async def run_check(settings: Settings) -> int:
    """Print one line per check; the exit code is 0 when nothing was rejected."""
    token, api_key = settings.require_credentials()
    print("settings: ok")
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        discord, discord_ok = await _probe(
            session, f"{settings.discord_rest_url}/users/@me", {"Authorization": f"Bot {token}"}
        )
        print(f"DISCORD_TOKEN at {settings.discord_rest_url}: {discord}")
        base = f"{settings.gemini_base_url}/{settings.gemini_api_version}"
        model_url = f"{base}/models/{settings.gemini_model}"
        gemini, gemini_ok = await _probe(session, model_url, {"x-goog-api-key": api_key})
        print(f"GEMINI_API_KEY for {settings.gemini_model}: {gemini}")
    return EXIT_OK if discord_ok and gemini_ok else EXIT_REJECTED

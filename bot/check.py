"""`python -m bot check`: are the settings valid, do Discord and Gemini accept the tokens, and
(with REDIS_URL) does the fleet's Redis answer?"""

from __future__ import annotations

from typing import Literal

import aiohttp

from bot.config import Settings
from bot.store.redis_link import RedisLink, RedisUnavailable, redact_url

__all__ = ["run_check"]

# 0: both accepted; 3: one was rejected; 4: nothing rejected, but one could not be verified.
EXIT_OK, EXIT_REJECTED, EXIT_UNVERIFIED = 0, 3, 4
Verdict = Literal["ok", "rejected", "unverified"]


async def _probe(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[str, Verdict]:
    """("ok" | "rejected (401)" | "could not verify: ...", the verdict)."""
    try:
        async with session.get(url, headers=headers) as response:
            if response.status == 200:
                return "ok", "ok"
            return f"rejected ({response.status})", "rejected"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"could not verify: not reachable from here ({type(exc).__name__})", "unverified"


async def _check_redis(url: str) -> Verdict:
    """REDIS_URL (a fleet): one PING; a refused password is "rejected" (the password hidden)."""
    link = RedisLink(url, timeout_s=5.0)
    try:
        await link.ping()
    except RedisUnavailable as exc:
        text = str(exc)
        verdict: Verdict = (
            "rejected"
            if any(w in text for w in ("WRONGPASS", "NOAUTH", "Authentication"))
            else "unverified"
        )
        label = "rejected" if verdict == "rejected" else "could not verify"
        print(f"REDIS_URL: {label}: {text}")
        return verdict
    finally:
        await link.aclose()
    print(f"REDIS_URL {redact_url(url)}: ok")
    return "ok"


async def run_check(settings: Settings) -> int:
    """Print one line per check; exit 0 when both were accepted, 3 when one was rejected, 4
    when nothing was rejected but Discord or Gemini could not be reached to verify."""
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
    verdicts = {discord_ok, gemini_ok}
    if settings.redis_url is not None:
        verdicts.add(await _check_redis(settings.redis_url.get_secret_value()))
    if "rejected" in verdicts:
        return EXIT_REJECTED
    return EXIT_UNVERIFIED if "unverified" in verdicts else EXIT_OK

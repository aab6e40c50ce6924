"""The baseline: a bare hikari GatewayBot with the bot's intents and HTTP settings, one listener.

`python -m benchmarks.bare_bot noop` does nothing with a message (it answers only the harness's
sentinel, so the harness knows every earlier event was handled); `reply` answers every mention
with a fixed string. It reads DISCORD_TOKEN and DISCORD_REST_URL, like the bot.
"""

from __future__ import annotations

import os
import sys

import hikari

from bot.discord.gateway import INTENTS, bot_id_from_token

__all__ = ["FIXED_REPLY", "SENTINEL", "main"]

SENTINEL = "!bench-sentinel"
FIXED_REPLY = "fixed reply"


def main(argv: list[str] | None = None) -> int:
    """Run until SIGTERM."""
    args = sys.argv[1:] if argv is None else argv
    mode = args[0] if args else "noop"
    if mode not in ("noop", "reply"):
        print("usage: python -m benchmarks.bare_bot noop|reply", file=sys.stderr)
        return 2
    token = os.environ["DISCORD_TOKEN"]
    me = bot_id_from_token(token)
    bot = hikari.GatewayBot(
        token,
        intents=INTENTS,
        rest_url=os.environ["DISCORD_REST_URL"],
        banner=None,
        logs=None,
        # Keep-alive REST connections, as bot/discord/gateway.py sets them.
        http_settings=hikari.impl.HTTPSettings(force_close_transports=False),
    )

    async def on_message(event: hikari.MessageCreateEvent) -> None:
        if mode == "noop":
            if event.message.content == SENTINEL:
                await event.message.respond("ok", reply=True)
        elif not event.is_bot and me in (event.message.user_mentions_ids or ()):
            await event.message.respond(FIXED_REPLY, reply=True)

    bot.subscribe(hikari.MessageCreateEvent, on_message)
    bot.run(check_for_updates=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A local, protocol-level Discord (REST + gateway) for tests, the demo and load tests.

The real hikari ``GatewayBot`` connects to it::

    async with DiscordEmulator() as emu:
        bot = hikari.GatewayBot(emu.token, rest_url=emu.rest_url, banner=None)
        await bot.start(check_for_updates=False)
        await emu.wait_until_ready()
"""

from bot.emulator.discord.emulator import DiscordEmulator
from bot.emulator.discord.records import InteractionRecord, SentMessage

__all__ = ["DiscordEmulator", "InteractionRecord", "SentMessage"]

"""A protocol-level Gemini API emulator for tests, demos, load tests and benchmarks.

async with GeminiEmulator() as emu:
    client = emu.client(timeout_ms=5_000)
    reply = await client.aio.models.generate_content(model="gemini-2.5-flash", contents="hi")
"""

from bot.emulator.gemini.answers import LONG_ANSWER, default_responder, echo_answer
from bot.emulator.gemini.faults import Fault, FaultKind
from bot.emulator.gemini.records import GeminiRequest
from bot.emulator.gemini.server import GeminiEmulator, Latency, Responder
from bot.emulator.gemini.wire import IMAGE_TOKENS, format_duration

__all__ = [
    "IMAGE_TOKENS",
    "LONG_ANSWER",
    "Fault",
    "FaultKind",
    "GeminiEmulator",
    "GeminiRequest",
    "Latency",
    "Responder",
    "default_responder",
    "echo_answer",
    "format_duration",
]

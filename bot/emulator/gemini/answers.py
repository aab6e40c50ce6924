"""The default responder: deterministic answers that tests and demos can predict."""

from __future__ import annotations

import re

from bot.emulator.gemini.records import GeminiRequest

__all__ = ["LONG_ANSWER", "default_responder", "echo_answer"]

_LONG_TRIGGER = re.compile(r"\blong\b", re.IGNORECASE)
ECHO_LIMIT = 200

_PYTHON_EXAMPLE = '''\
"""A small token bucket with retries, the way a chat bot guards a paid API."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """Allows `rate` calls per second with bursts of up to `capacity` calls."""

    rate: float
    capacity: int
    tokens: float = field(init=False)
    updated: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = float(self.capacity)
        self.updated = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        elapsed = now - self.updated
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.updated = now

    async def acquire(self) -> None:
        """Wait until one token is free, then take it."""
        while True:
            self._refill()
            if self.tokens >= 1:
                self.tokens -= 1
                return
            missing = 1 - self.tokens
            await asyncio.sleep(missing / self.rate)


class RetryableError(Exception):
    """Raised by a call that may succeed when tried again later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


async def call_with_retries(
    call: Callable[[], Awaitable[str]],
    bucket: TokenBucket,
    attempts: int = 4,
    base_delay: float = 0.5,
) -> str:
    """Run `call` under the bucket, retrying transient errors with jittered backoff."""
    for attempt in range(1, attempts + 1):
        await bucket.acquire()
        try:
            return await call()
        except RetryableError as error:
            if attempt == attempts:
                raise
            # The server knows best: honour its delay before our own guess.
            delay = error.retry_after
            if delay is None:
                delay = base_delay * 2 ** (attempt - 1)
                delay += random.uniform(0, delay / 2)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def main() -> None:
    bucket = TokenBucket(rate=2.0, capacity=4)

    async def ask() -> str:
        if random.random() < 0.3:
            raise RetryableError("the model is overloaded", retry_after=0.2)
        return "pong"

    answers = await asyncio.gather(*(call_with_retries(ask, bucket) for _ in range(8)))
    print(answers)


if __name__ == "__main__":
    asyncio.run(main())
'''

_JS_EXAMPLE = """\
// Split a long answer into Discord-sized messages without breaking code fences.
const FENCE = "\\u0060".repeat(3);

export function splitMessage(text, limit = 2000) {
  const chunks = [];
  let current = "";
  let language = null; // set while inside a fence
  for (const line of text.split("\\n")) {
    const reserve = language === null ? 0 : FENCE.length + 1;
    if (current && current.length + line.length + 1 + reserve > limit) {
      chunks.push(language === null ? current : `${current}\\n${FENCE}`);
      current = language === null ? "" : `${FENCE}${language}`;
    }
    current = current ? `${current}\\n${line}` : line;
    if (line.startsWith(FENCE)) {
      language = language === null ? line.slice(FENCE.length) : null;
    }
  }
  if (current) chunks.push(current);
  return chunks;
}
"""


LONG_ANSWER = f"""\
# Rate limits, retries and long answers

Any bot that talks to a paid model API lives between two limits: the quota the provider \
grants and the patience of the person waiting in the channel. A good design treats both \
as first-class inputs rather than as errors that appear now and then.

## What to get right

1. **Admit work at the rate the quota allows.** A token bucket in front of the client keeps \
bursts from turning into a wall of `429 RESOURCE_EXHAUSTED` answers.
2. **Retry in one place only.** When the SDK, a wrapper and the caller all retry, one failure \
becomes dozens of requests. Pick a single layer and let it decide.
3. **Honour the server's delay.** A `RetryInfo.retryDelay` of `12s` means the next request \
before that moment is wasted quota.
4. **Tell the user what is happening.** A short "still thinking" message is better than \
silence, and far better than a lost question.

Things that tend to go wrong:

- Retrying requests that can never succeed, such as a wrong API key or a blocked prompt.
- Measuring latency without the time spent waiting for the rate limiter.
- Splitting a long answer in the middle of a code block, which breaks the formatting of every \
message after it.

## A token bucket with retries in Python

The example below keeps the request rate under control and retries transient failures with \
jittered exponential backoff, preferring the delay the server asked for:

```python
{_PYTHON_EXAMPLE}```

Note that the bucket is shared: every caller draws from the same budget, so a burst of eight \
questions is spread out instead of failing together.

## Splitting messages in JavaScript

Discord refuses messages longer than 2000 characters, so long answers have to be cut. The \
cut must respect code fences: close the fence at the end of one message and reopen it, with \
the same language, at the start of the next.

```js
{_JS_EXAMPLE}```

## Checklist

- [x] One retry layer, with the server's delay taking precedence
- [x] A rate limiter shared by every request to the same model
- [x] Fences closed and reopened when an answer is split
- [ ] Alerts when the share of rate-limited requests stays high for five minutes

With these pieces in place, a traffic spike makes the bot slower for a while instead of \
making it fail, and every question still gets its answer.
"""


def echo_answer(request: GeminiRequest) -> str:
    """`You said: <first 200 chars>` plus how many turns and images the request carried."""
    text = request.last_user_text
    said = f"You said: {text[:ECHO_LIMIT]}" if text else "You sent no text."
    return f"{said}\n(turns: {len(request.contents)}, images: {request.image_count})"


def default_responder(request: GeminiRequest) -> str:
    """The long markdown answer when the last user text has the word "long", else an echo."""
    if _LONG_TRIGGER.search(request.last_user_text):
        return LONG_ANSWER
    return echo_answer(request)

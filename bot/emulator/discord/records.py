"""What the bot did, as tests see it: sent messages, interaction responses, waiting helpers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "Activity",
    "BoundedDict",
    "InteractionRecord",
    "Notifier",
    "SentMessage",
    "WebhookMessage",
]

JSON = dict[str, Any]
K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

# Fallback poll period of wait_for: conditions on state outside the emulator (a test's
# listener list, say) are never notified, so they are re-checked at least this often.
_POLL_SECONDS = 0.02


class Notifier:
    """Wakes waiters whenever the emulator records something; waiters re-check a predicate."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def notify(self) -> None:
        """Wake every current waiter."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float,  # noqa: ASYNC109 - callers pass timeouts (the agreed test API)
        what: str = "condition",
    ) -> None:
        """Return once ``predicate()`` is true; raise TimeoutError after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                msg = f"timed out after {timeout}s waiting for {what}"
                raise TimeoutError(msg)
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, _POLL_SECONDS)):
                    await changed.wait()


@dataclass(eq=False)
class SentMessage:
    """A message the bot created with ``POST /channels/{id}/messages`` (edits update it)."""

    id: int
    channel_id: int
    content: str
    body: JSON
    message: JSON
    reply_to: int | None
    allowed_mentions: JSON | None
    edits: list[JSON] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    created_at: float = field(default_factory=time.monotonic)
    edited_at: list[float] = field(default_factory=list)  # monotonic, one per edit


@dataclass(frozen=True, eq=False)
class WebhookMessage:
    """A message someone posted through a channel webhook (Alertmanager's Discord receiver)."""

    id: int
    webhook_id: int
    channel_id: int
    username: str
    content: str
    embeds: list[JSON]
    body: JSON


@dataclass(eq=False)
class InteractionRecord:
    """One slash-command interaction sent to the bot and everything it answered."""

    id: int
    token: str
    name: str
    channel_id: int
    guild_id: int | None
    user: JSON
    payload: JSON
    notifier: Notifier = field(repr=False)
    created_at: float = 0.0
    responses: list[JSON] = field(default_factory=list)
    followups: list[JSON] = field(default_factory=list)
    followup_messages: list[JSON] = field(default_factory=list)
    callback_types: list[int] = field(default_factory=list)
    original: JSON | None = None
    final_content: str | None = None
    deferred: bool = False
    ephemeral: bool = False

    @property
    def acknowledged(self) -> bool:
        """Whether the bot has sent the initial callback."""
        return bool(self.callback_types)

    @property
    def streaming(self) -> bool:
        """Does a message of this interaction still carry a button (an answer streaming)?"""
        messages = [self.original, *self.followup_messages]
        return any(m is not None and m.get("components") for m in messages)

    async def wait_for_response(
        self,
        timeout: float = 10.0,  # noqa: ASYNC109 - callers pass timeouts (the agreed test API)
    ) -> str:
        """Wait until the interaction has final (non-deferred) content and return it; when the
        answer streams, until it is complete: none of its messages still carries a button (a
        streaming answer's Stop button goes when it ends)."""
        await self.notifier.wait_for(
            lambda: self.final_content is not None and not self.streaming,
            timeout,
            f"a final response to interaction {self.id} (/{self.name})",
        )
        assert self.final_content is not None
        return self.final_content

    async def wait_for_followups(
        self,
        count: int = 1,
        timeout: float = 10.0,  # noqa: ASYNC109 - callers pass timeouts (the agreed test API)
    ) -> list[JSON]:
        """Wait until at least ``count`` follow-up messages arrived and return them."""
        await self.notifier.wait_for(
            lambda: len(self.followups) >= count,
            timeout,
            f"{count} follow-up(s) to interaction {self.id} (/{self.name})",
        )
        return self.followups


class BoundedDict(OrderedDict[K, V]):
    """An insertion-ordered dict that forgets its oldest entries beyond ``maxlen``."""

    def __init__(self, maxlen: int) -> None:
        super().__init__()
        self.maxlen = maxlen

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        while len(self) > self.maxlen:
            self.popitem(last=False)


def _append_bounded(items: list[T], item: T, limit: int) -> None:
    # Trim in chunks of a tenth so appends stay O(1) amortised while the list stays a list.
    items.append(item)
    if len(items) > limit + max(limit // 10, 1):
        del items[: len(items) - limit]


class Activity:
    """Everything the bot did against the emulator, bounded to ``limit`` entries per kind."""

    def __init__(self, notifier: Notifier, limit: int) -> None:
        self.notifier = notifier
        self.limit = limit
        self.sent_messages: list[SentMessage] = []
        self.webhook_messages: list[WebhookMessage] = []
        self.spec_violations: list[str] = []
        self.requests: deque[tuple[str, str, int]] = deque(maxlen=limit)
        self.typing: Counter[int] = Counter()
        self.reactions: deque[tuple[int, int, str, bool]] = deque(maxlen=limit)
        self.interactions: BoundedDict[int, InteractionRecord] = BoundedDict(limit)
        self._interactions_by_token: BoundedDict[str, InteractionRecord] = BoundedDict(limit)
        self._sent_by_id: BoundedDict[int, SentMessage] = BoundedDict(limit)
        self._sent_by_channel: dict[int, deque[SentMessage]] = {}
        self._first_reply: BoundedDict[int, SentMessage] = BoundedDict(limit)

    def record_request(self, method: str, path: str, status: int) -> None:
        """Log one REST request and its answer."""
        self.requests.append((method, path, status))
        self.notifier.notify()

    def record_violation(self, description: str) -> None:
        """Log a request Discord would have refused because the bot broke the protocol."""
        _append_bounded(self.spec_violations, description, self.limit)
        self.notifier.notify()

    def record_sent(self, sent: SentMessage) -> None:
        """Log a message the bot created in a channel."""
        _append_bounded(self.sent_messages, sent, self.limit)
        self._sent_by_id[sent.id] = sent
        channel = self._sent_by_channel.get(sent.channel_id)
        if channel is None:
            channel = self._sent_by_channel[sent.channel_id] = deque(maxlen=self.limit)
        channel.append(sent)
        if sent.reply_to is not None and sent.reply_to not in self._first_reply:
            self._first_reply[sent.reply_to] = sent
        self.notifier.notify()

    def record_webhook(self, posted: WebhookMessage) -> None:
        """Log a message posted through a channel webhook."""
        _append_bounded(self.webhook_messages, posted, self.limit)
        self.notifier.notify()

    def sent(self, message_id: int) -> SentMessage | None:
        """Return a message the bot created, by id."""
        return self._sent_by_id.get(message_id)

    def first_reply(self, message_id: int) -> SentMessage | None:
        """Return the first message the bot sent in reply to ``message_id``."""
        return self._first_reply.get(message_id)

    def messages_in(self, channel_id: int) -> list[SentMessage]:
        """Return the messages the bot created in a channel, oldest first."""
        return list(self._sent_by_channel.get(channel_id, ()))

    def count_typing(self, channel_id: int) -> None:
        """Count one typing indicator the bot triggered."""
        self.typing[channel_id] += 1
        self.notifier.notify()

    def record_reaction(self, channel_id: int, message_id: int, emoji: str, *, added: bool) -> None:
        """Log a reaction the bot added (or removed)."""
        self.reactions.append((channel_id, message_id, emoji, added))
        self.notifier.notify()

    def add_interaction(self, record: InteractionRecord) -> None:
        """Remember an interaction sent to the bot."""
        self.interactions[record.id] = record
        self._interactions_by_token[record.token] = record

    def interaction_by_token(self, token: str) -> InteractionRecord | None:
        """Return the interaction an interaction token belongs to."""
        return self._interactions_by_token.get(token)

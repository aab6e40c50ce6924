"""Per-channel settings (`/channel`): auto-reply, a persona (system instruction) and a model.

A thread has settings of its own only if `/channel` was used in it; any setting it lacks comes
from its parent channel. All settings are held in memory (the gateway asks about auto-reply
for every message, without awaiting) and written through to the durable store; at most
`max_channels` channels have settings, so the map is bounded.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

from bot.llm.types import GenerationSettings
from bot.store.fairuse import FairUseStore

__all__ = ["MAX_CHANNELS", "ChannelConfig", "ChannelSettings", "ChannelStats"]

log = logging.getLogger(__name__)

MAX_CHANNELS: Final = 10_000


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """One channel's own settings; None means "not set here" (inherit, or the bot's default)."""

    autoreply: bool | None = None
    persona: str | None = None
    model: str | None = None

    def over(self, parent: ChannelConfig) -> ChannelConfig:
        """These settings, with what they lack taken from `parent`."""
        return ChannelConfig(
            autoreply=self.autoreply if self.autoreply is not None else parent.autoreply,
            persona=self.persona if self.persona is not None else parent.persona,
            model=self.model if self.model is not None else parent.model,
        )

    @property
    def empty(self) -> bool:
        return self.autoreply is None and self.persona is None and self.model is None


@dataclass(frozen=True, slots=True)
class ChannelStats:
    channels: int
    autoreply_channels: int
    capacity: int


class ChannelSettings:
    """The channels' settings, in memory and in the store."""

    def __init__(
        self,
        store: FairUseStore,
        *,
        ignore_prefix: str = "//",
        allowed_models: tuple[str, ...] = (),
        persona_max_chars: int = 1000,
        max_channels: int = MAX_CHANNELS,
    ) -> None:
        self._store = store
        self.ignore_prefix = ignore_prefix
        self.allowed_models = allowed_models
        self.persona_max_chars = persona_max_chars
        self.max_channels = max_channels
        self._configs: dict[int, ChannelConfig] = {}

    async def load(self) -> int:
        """Read every channel's settings from the store (at start); returns how many."""
        loaded: dict[int, ChannelConfig] = {}
        for channel_id, raw in (await self._store.channels()).items():
            config = _from_json(raw)
            if config is not None and not config.empty and len(loaded) < self.max_channels:
                loaded[channel_id] = config
        self._configs = loaded
        return len(loaded)

    def stats(self) -> ChannelStats:
        return ChannelStats(
            channels=len(self._configs),
            autoreply_channels=sum(1 for c in self._configs.values() if c.autoreply),
            capacity=self.max_channels,
        )

    def own(self, channel_id: int) -> ChannelConfig:
        return self._configs.get(channel_id, ChannelConfig())

    def resolve(self, channel_id: int, parent_id: int | None = None) -> ChannelConfig:
        """What applies in a channel or thread (a thread inherits what it does not set)."""
        config = self.own(channel_id)
        if parent_id is not None:
            config = config.over(self.own(parent_id))
        return config

    def autoreplies(self, channel_id: int, parent_id: int | None, text: str) -> bool:
        """Should a message that does not address the bot be answered here?"""
        if not self._configs or not self.resolve(channel_id, parent_id).autoreply:
            return False
        return not (self.ignore_prefix and text.lstrip().startswith(self.ignore_prefix))

    def apply(
        self, generation: GenerationSettings, channel_id: int, parent_id: int | None
    ) -> GenerationSettings:
        """The generation settings with the channel's persona and model, if it has them."""
        if not self._configs:
            return generation
        config = self.resolve(channel_id, parent_id)
        if config.persona is not None:
            generation = replace(generation, system_instruction=config.persona)
        if config.model is not None and config.model in self.allowed_models:
            generation = replace(generation, model=config.model)
        return generation

    async def update(self, channel_id: int, **changes: Any) -> ChannelConfig:
        """Change some of a channel's own settings; raises ValueError on a refused value."""
        persona = changes.get("persona")
        if persona is not None and len(persona) > self.persona_max_chars:
            raise ValueError(
                f"a persona is at most {self.persona_max_chars} characters "
                f"(this one has {len(persona)})"
            )
        model = changes.get("model")
        if model is not None and model not in self.allowed_models:
            raise ValueError(f"{model} is not an allowed model: {', '.join(self.allowed_models)}")
        if channel_id not in self._configs and len(self._configs) >= self.max_channels:
            raise ValueError(
                f"at most {self.max_channels} channels can have settings; "
                "`/channel reset` some first"
            )
        config = replace(self.own(channel_id), **changes)
        await self._save(channel_id, config)
        return config

    async def reset(self, channel_id: int) -> bool:
        """Forget a channel's own settings; False if it had none."""
        had = channel_id in self._configs
        await self._save(channel_id, ChannelConfig())
        return had

    async def _save(self, channel_id: int, config: ChannelConfig) -> None:
        await self._store.set_channel(channel_id, None if config.empty else asdict(config))
        if config.empty:
            self._configs.pop(channel_id, None)
        else:
            self._configs[channel_id] = config


def _from_json(raw: dict[str, Any]) -> ChannelConfig | None:
    autoreply, persona, model = raw.get("autoreply"), raw.get("persona"), raw.get("model")
    if not (
        (autoreply is None or isinstance(autoreply, bool))
        and (persona is None or isinstance(persona, str))
        and (model is None or isinstance(model, str))
    ):
        log.warning("ignoring unreadable channel settings in the store")
        return None
    return ChannelConfig(autoreply, persona, model)

"""ResponseCache keys, LRU/TTL/byte-budget eviction and tags, on a fake clock."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from bot.llm.cache import ENTRY_OVERHEAD_BYTES, ResponseCache, entry_size, make_cache_key
from bot.llm.types import GenerationSettings, InlineFile, LLMReply, LLMRequest, Message
from tests.fakes import FakeClock


def image(data: bytes) -> InlineFile:
    return InlineFile("image/png", data, hashlib.sha256(data).hexdigest())


def request(**changes: object) -> LLMRequest:
    settings = GenerationSettings(
        model="gemini-2.5-flash",
        system_instruction="You are helpful.",
        temperature=0.7,
        top_p=0.95,
        top_k=40,
        max_output_tokens=1024,
    )
    messages = (
        Message("user", "hello"),
        Message("model", "hi there"),
        Message("user", "what is in this picture?", (image(b"cat"),)),
    )
    base = LLMRequest(settings, messages)
    setting_changes = {k: v for k, v in changes.items() if k != "messages"}
    if setting_changes:
        base = dataclasses.replace(
            base,
            settings=dataclasses.replace(base.settings, **setting_changes),  # type: ignore[arg-type]
        )
    if "messages" in changes:
        base = dataclasses.replace(base, messages=changes["messages"])  # type: ignore[arg-type]
    return base


def reply(text: str = "an answer") -> LLMReply:
    return LLMReply(text=text, model="gemini-2.5-flash", finish_reason="STOP")


def test_equal_requests_share_a_key() -> None:
    key = make_cache_key(request())
    assert key == make_cache_key(request())
    assert len(key) == 64
    assert int(key, 16) >= 0


@pytest.mark.parametrize(
    "changed",
    [
        request(model="gemini-2.5-pro"),
        request(system_instruction="You are terse."),
        request(system_instruction=None),
        request(temperature=0.2),
        request(top_p=0.9),
        request(top_k=41),
        request(max_output_tokens=2048),
        request(
            messages=(
                Message("user", "hello"),
                Message("model", "hi there"),
                Message("user", "what is in this picture?", (image(b"dog"),)),
            )
        ),
        request(messages=(Message("user", "what is in this picture?", (image(b"cat"),)),)),
        request(
            messages=(
                Message("user", "hello"),
                Message("model", "hi there!"),
                Message("user", "what is in this picture?", (image(b"cat"),)),
            )
        ),
        request(
            messages=(
                Message("model", "hello"),
                Message("model", "hi there"),
                Message("user", "what is in this picture?", (image(b"cat"),)),
            )
        ),
        request(
            messages=(
                Message("model", "hi there"),
                Message("user", "hello"),
                Message("user", "what is in this picture?", (image(b"cat"),)),
            )
        ),
        request(
            messages=(
                Message("user", "hello"),
                Message("model", "hi there"),
                Message("user", "what is in this picture?", (image(b"cat"), image(b"cat"))),
            )
        ),
    ],
)
def test_key_changes_with_anything_that_shapes_the_answer(changed: LLMRequest) -> None:
    assert make_cache_key(changed) != make_cache_key(request())


def test_key_does_not_confuse_text_boundaries() -> None:
    a = request(messages=(Message("user", "ab"), Message("user", "c")))
    b = request(messages=(Message("user", "a"), Message("user", "bc")))
    assert make_cache_key(a) != make_cache_key(b)


def test_file_without_digest_is_hashed_from_its_data() -> None:
    no_digest = request(messages=(Message("user", "x", (InlineFile("image/png", b"cat", ""),)),))
    other = request(messages=(Message("user", "x", (InlineFile("image/png", b"dog", ""),)),))
    assert make_cache_key(no_digest) != make_cache_key(other)


def test_hit_and_miss_are_counted() -> None:
    cache = ResponseCache(clock=FakeClock(500.0))
    key = make_cache_key(request())
    assert cache.get(key) is None
    assert cache.put(key, reply())
    assert cache.get(key) == reply()
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)
    assert cache.stats.entries == 1
    assert cache.stats.bytes == entry_size(key, reply())


def test_entry_size_counts_encoded_text() -> None:
    plain = entry_size("k", reply("aaaa"))
    accented = entry_size("k", reply("éééé"))  # two UTF-8 bytes each
    assert accented - plain == 4
    assert plain == 4 + 1 + len("gemini-2.5-flash") + len("STOP") + ENTRY_OVERHEAD_BYTES


def test_ttl_expiry_on_read_and_by_sweep() -> None:
    clock = FakeClock(500.0)
    cache = ResponseCache(ttl_s=60.0, clock=clock)
    cache.put("a", reply())
    clock.now += 30
    cache.put("b", reply())
    clock.now += 30  # "a" is exactly 60 s old
    assert cache.get("a") is None
    assert cache.stats.evictions["ttl"] == 1
    assert cache.get("b") is not None
    clock.now += 30
    cache.put("c", reply())
    assert cache.sweep() == 1  # "b"
    assert cache.sweep() == 0
    assert len(cache) == 1
    assert cache.stats.evictions == {"lru": 0, "ttl": 2, "cleared": 0}
    assert cache.stats.bytes == entry_size("c", reply())


def test_lru_eviction_keeps_recently_used() -> None:
    cache = ResponseCache(max_entries=2, clock=FakeClock(500.0))
    cache.put("a", reply())
    cache.put("b", reply())
    assert cache.get("a") is not None
    cache.put("c", reply())
    assert "b" not in cache
    assert "a" in cache
    assert "c" in cache
    assert cache.stats.evictions["lru"] == 1
    assert cache.stats.entries == 2


def test_byte_budget_evicts_oldest() -> None:
    size = entry_size("a", reply("x" * 100))
    cache = ResponseCache(max_bytes=size * 3, clock=FakeClock(500.0))
    for key in "abcd":
        assert cache.put(key, reply("x" * 100))
    assert [k for k in "abcd" if k in cache] == ["b", "c", "d"]
    assert cache.stats.bytes == size * 3
    assert cache.stats.evictions["lru"] == 1
    # One big entry pushes out as many as it needs.
    assert cache.put("big", reply("x" * (size * 2)))
    assert list(k for k in ("b", "c", "d", "big") if k in cache) == ["big"]
    assert cache.stats.bytes <= cache.max_bytes


def test_an_entry_larger_than_the_budget_is_not_stored() -> None:
    cache = ResponseCache(max_bytes=1000, clock=FakeClock(500.0))
    cache.put("a", reply())
    assert cache.put("huge", reply("x" * 2000)) is False
    assert "a" in cache
    assert cache.stats.rejected_too_large == 1


def test_overflow_evicts_expired_entries_as_ttl() -> None:
    clock = FakeClock(500.0)
    cache = ResponseCache(max_entries=1, ttl_s=10.0, clock=clock)
    cache.put("a", reply())
    clock.now += 11
    cache.put("b", reply())
    assert cache.stats.evictions == {"lru": 0, "ttl": 1, "cleared": 0}


def test_replacing_a_key_is_not_an_eviction() -> None:
    cache = ResponseCache(clock=FakeClock(500.0))
    cache.put("a", reply("one"), tag=1)
    cache.put("a", reply("two"), tag=2)
    assert cache.get("a") == reply("two")
    assert cache.stats.entries == 1
    assert cache.stats.bytes == entry_size("a", reply("two"))
    assert sum(cache.stats.evictions.values()) == 0
    assert cache.clear_tag(1) == 0
    assert cache.clear_tag(2) == 1


def test_clear_tag_drops_only_that_conversation() -> None:
    cache = ResponseCache(clock=FakeClock(500.0))
    cache.put("a1", reply(), tag=111)
    cache.put("a2", reply(), tag=111)
    cache.put("b1", reply(), tag=222)
    cache.put("untagged", reply())
    assert cache.clear_tag(111) == 2
    assert cache.clear_tag(111) == 0
    assert "b1" in cache
    assert "untagged" in cache
    assert cache.stats.evictions["cleared"] == 2


def test_invalidate_and_clear() -> None:
    cache = ResponseCache(clock=FakeClock(500.0))
    for key in ("a", "b", "c"):
        cache.put(key, reply(), tag=key)
    assert cache.invalidate(lambda key, _tag: key == "b") == 1
    assert cache.clear() == 2
    assert len(cache) == 0
    assert (cache.stats.entries, cache.stats.bytes) == (0, 0)
    assert cache.stats.evictions["cleared"] == 3
    assert cache.clear_tag("a") == 0  # the tag index was emptied too


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        ResponseCache(max_entries=-1)
    with pytest.raises(ValueError, match="positive"):
        ResponseCache(ttl_s=0)


@pytest.mark.parametrize("bounds", [{"max_entries": 0}, {"max_bytes": 0}])
def test_a_zero_bound_turns_the_cache_off(bounds: dict[str, int]) -> None:
    # CACHE_MAX_ENTRIES=0 (or CACHE_MAX_BYTES=0): nothing is kept, nothing is counted.
    cache = ResponseCache(**bounds)
    assert not cache.enabled
    assert cache.put("k", LLMReply("an answer", "m")) is False
    assert cache.get("k") is None
    assert len(cache) == 0
    assert (cache.stats.hits, cache.stats.misses, cache.stats.rejected_too_large) == (0, 0, 0)

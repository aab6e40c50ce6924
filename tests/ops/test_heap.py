"""Freezing the start-up heap: old objects leave the collector's view, new garbage still goes."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from bot.ops.heap import freeze_startup_heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
def test_start_up_objects_are_frozen_and_later_garbage_is_still_collected() -> None:
    old = Node()
    old_ref = weakref.ref(old)
    assert freeze_startup_heap() == gc.get_freeze_count() > 0

    new = Node()
    new_ref = weakref.ref(new)
    del old, new
    gc.collect()

    assert new_ref() is None  # made after the freeze: collected as usual
    assert old_ref() is not None  # frozen: the collector no longer looks at it

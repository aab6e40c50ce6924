"""Child process of test_store_crash: writes until killed, printing each acknowledged key.

A key is printed only after the `set`/`set_many` holding it has returned, so every printed key
is a write the store acknowledged.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from bot.store import SqliteStore

MAX_WRITES = 200_000  # a bound in case the parent dies without killing us


def value_for(key: str) -> bytes:
    """The value written under `key`: every 5th one large and compressible (> 10 KiB)."""
    number = int(key.rsplit(":", 1)[-1])
    if number % 5 == 0:
        return f"{key} big ".encode() * 1200
    return f"{key} value".encode()


async def main(path: Path, synchronous: str) -> None:
    store = SqliteStore(path, synchronous=synchronous)  # type: ignore[arg-type]
    await store.open()
    queue = store.namespace("queue")
    number = 0
    while number < MAX_WRITES:
        if number % 7 == 0:
            keys = [str(number + i) for i in range(3)]
            await queue.set_many({key: value_for(f"queue:{key}") for key in keys})
            number += 3
        else:
            keys = [str(number)]
            await queue.set(keys[0], value_for(f"queue:{keys[0]}"), ttl_s=86_400)
            number += 1
        sys.stdout.write("".join(f"queue:{key}\n" for key in keys))
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))

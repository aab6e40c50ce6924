"""`python -m benchmarks.status_probe URL INTERVAL`: GET URL every INTERVAL seconds and print each
answer's latency in seconds (or `fail`), one per line, until killed.

A process of its own, so that what the harness itself is busy with (it drives the burst through
the emulators) does not count in the bot's figure.
"""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp


async def probe(url: str, interval_s: float) -> None:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        while True:
            started = time.perf_counter()
            try:
                async with http.get(url) as response:
                    await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, OSError, TimeoutError):
                ok = False
            print(f"{time.perf_counter() - started:.6f}" if ok else "fail", flush=True)
            await asyncio.sleep(interval_s)


if __name__ == "__main__":
    asyncio.run(probe(sys.argv[1], float(sys.argv[2])))

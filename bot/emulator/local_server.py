"""What both emulators share: an aiohttp app on a loopback port, started and stopped once."""

from __future__ import annotations

import socket
from types import TracebackType
from typing import Any, Self

from aiohttp import web

__all__ = ["LocalServer", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago, for a child process to listen on (a
    server of our own binds port 0 instead and reads the port back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class LocalServer:
    """Subclasses build their `web.Application`; this owns the runner, the port and the URL.

    `async with Emulator() as emu:` starts it on a free loopback port; `base_url` is valid from
    then on. `_runner_options` adds `web.AppRunner` options, `_before_stop` runs before the
    server closes (to drop long-lived connections first).
    """

    _name = "the emulator"
    _runner_options: dict[str, Any] = {}  # noqa: RUF012 (read-only class default)

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    def _build_app(self) -> web.Application:
        raise NotImplementedError

    async def _before_stop(self) -> None:
        return None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on `host:port` (port 0 picks a free one); `base_url` is valid afterwards."""
        if self._runner is not None:
            raise RuntimeError(f"{self._name} is already running")
        runner = web.AppRunner(
            self._build_app(),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=1.0,
            **self._runner_options,
        )
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        bound_host, bound_port = runner.addresses[0][:2]
        self._base_url = f"http://{bound_host}:{bound_port}"
        self._runner = runner

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await self._before_stop()
        await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT` once started."""
        if self._base_url is None:
            raise RuntimeError(f"{self._name} is not running: await emu.start() first")
        return self._base_url

"""Downloading attachments from Discord's CDN, and from nowhere else.

An attachment URL arrives in a user's message, so it is untrusted input: fetched blindly it
lets anyone make the bot request its own ops server (`/status`), a cloud metadata address or a
private network (SSRF). So:

* only URLs on an allowed origin are fetched: Discord's CDN hosts over https
  (`DEFAULT_CDN_HOSTS`, or `DISCORD_CDN_HOSTS`), plus the origin of a non-default
  `DISCORD_REST_URL` (a REST proxy, or the emulator that serves its own attachments);
* redirects are followed by hand, at most `MAX_REDIRECTS`, and only to allowed origins;
* a host on the allow list that resolves to a loopback, private, link-local or otherwise
  non-public address is refused (DNS rebinding), unless that host was configured explicitly as
  a local origin (the emulator, a proxy on the same machine).

aiohttp has no allow-list or address filter of its own; `PublicOnlyResolver` is the small
wrapper around its resolver that the address rule needs.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from collections.abc import Iterable
from typing import Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from bot.chat.ports import DownloadRefused, DownloadTooLarge

__all__ = ["DEFAULT_CDN_HOSTS", "AttachmentFetcher", "PublicOnlyResolver"]

DEFAULT_CDN_HOSTS: Final = ("cdn.discordapp.com", "media.discordapp.net")
MAX_REDIRECTS: Final = 3
_CHUNK: Final = 64 * 1024
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


class _NonPublicAddress(OSError):
    """A host on the allow list resolved only to addresses the bot must not connect to."""


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return ip.is_global and not ip.is_multicast


class PublicOnlyResolver(AbstractResolver):
    """aiohttp's resolver, minus the non-public addresses of every host but the trusted ones."""

    def __init__(self, trusted_hosts: Iterable[str] = ()) -> None:
        self._inner = DefaultResolver()
        self._trusted = frozenset(host.lower() for host in trusted_hosts)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if host.lower() in self._trusted:
            return results
        public = [r for r in results if _is_public(r["host"])]
        if not public:
            raise _NonPublicAddress(f"{host} resolves only to non-public addresses")
        return public

    async def close(self) -> None:
        await self._inner.close()


def _origin(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host:
        return None
    return scheme, host, port or (443 if scheme == "https" else 80)


class AttachmentFetcher:
    """Fetches attachment bytes from allowed origins only, with a byte cap."""

    def __init__(
        self,
        *,
        cdn_hosts: Iterable[str] = DEFAULT_CDN_HOSTS,
        local_origins: Iterable[str] = (),
        timeout_s: float = 60.0,
    ) -> None:
        self._cdn_hosts = frozenset(host.lower() for host in cdn_hosts)
        self._local = frozenset(o for o in (_origin(url) for url in local_origins) if o)
        self._timeout_s = timeout_s
        self._http: aiohttp.ClientSession | None = None

    def allows(self, url: str) -> bool:
        """Is `url` on an allowed origin (before any DNS)?"""
        origin = _origin(url)
        if origin is None:
            return False
        scheme, host, port = origin
        if origin in self._local:
            return True
        return scheme == "https" and port == 443 and host in self._cdn_hosts

    async def fetch(self, url: str, max_bytes: int) -> bytes:
        """The bytes at `url`: DownloadRefused off the allowed origins, DownloadTooLarge past
        `max_bytes` (stopped as soon as the running total passes it)."""
        http = self._session()
        for _ in range(MAX_REDIRECTS + 1):
            if not self.allows(url):
                raise DownloadRefused(url)
            try:
                async with http.get(url, allow_redirects=False) as response:
                    if response.status in _REDIRECTS:
                        if "Location" not in response.headers:
                            raise DownloadRefused(url)  # a redirect to nowhere is no file
                        url = urllib.parse.urljoin(url, response.headers["Location"])
                        continue
                    response.raise_for_status()
                    declared = response.content_length
                    if declared is not None and declared > max_bytes:
                        raise DownloadTooLarge(url)
                    chunks: list[bytes] = []
                    total = 0
                    async for block in response.content.iter_chunked(_CHUNK):
                        total += len(block)
                        if total > max_bytes:
                            raise DownloadTooLarge(url)
                        chunks.append(block)
                    return b"".join(chunks)
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, _NonPublicAddress):
                    raise DownloadRefused(url) from exc
                raise
        raise DownloadRefused(url)  # too many redirects

    def _session(self) -> aiohttp.ClientSession:
        # Made on first use, so a bot that never downloads owns no session.
        if self._http is None:
            trusted = {host for _, host, _ in self._local}
            connector = aiohttp.TCPConnector(resolver=PublicOnlyResolver(trusted))
            self._http = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=self._timeout_s)
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

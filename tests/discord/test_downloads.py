"""Attachment downloads come from allowed origins only, over real HTTP (issue #16, item 3)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.chat.ports import DownloadRefused, DownloadTooLarge
from bot.discord.downloads import AttachmentFetcher, PublicOnlyResolver

BODY = b"\x89PNG" + b"\x00" * 1000


async def _server(routes: web.RouteTableDef) -> TestServer:
    app = web.Application()
    app.add_routes(routes)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@pytest.fixture
async def servers() -> AsyncIterator[tuple[TestServer, TestServer, list[str]]]:
    """An allowed origin (the 'emulator') and another one that must never be reached."""
    hits: list[str] = []
    other_routes = web.RouteTableDef()

    @other_routes.get("/secret")
    async def secret(request: web.Request) -> web.Response:
        hits.append("secret")
        return web.Response(body=b"internal")

    other = await _server(other_routes)
    routes = web.RouteTableDef()

    @routes.get("/ok.png")
    async def ok(request: web.Request) -> web.Response:
        return web.Response(body=BODY)

    @routes.get("/same.png")
    async def same(request: web.Request) -> web.Response:
        raise web.HTTPFound("/ok.png")

    @routes.get("/away.png")
    async def away(request: web.Request) -> web.Response:
        raise web.HTTPFound(str(other.make_url("/secret")))

    @routes.get("/loop.png")
    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop.png")

    allowed = await _server(routes)
    yield allowed, other, hits
    await allowed.close()
    await other.close()


async def test_fetches_from_the_allowed_origin_and_follows_redirects_within_it(
    servers: tuple[TestServer, TestServer, list[str]],
) -> None:
    allowed, _, _ = servers
    fetcher = AttachmentFetcher(cdn_hosts=(), local_origins=[str(allowed.make_url("/"))])
    try:
        assert await fetcher.fetch(str(allowed.make_url("/ok.png")), 10_000) == BODY
        assert await fetcher.fetch(str(allowed.make_url("/same.png")), 10_000) == BODY
        with pytest.raises(DownloadRefused):
            await fetcher.fetch(str(allowed.make_url("/loop.png")), 10_000)
    finally:
        await fetcher.aclose()


async def test_never_follows_a_redirect_off_the_allowed_origins(
    servers: tuple[TestServer, TestServer, list[str]],
) -> None:
    allowed, other, hits = servers
    fetcher = AttachmentFetcher(cdn_hosts=(), local_origins=[str(allowed.make_url("/"))])
    try:
        with pytest.raises(DownloadRefused):
            await fetcher.fetch(str(allowed.make_url("/away.png")), 10_000)
        with pytest.raises(DownloadRefused):
            await fetcher.fetch(str(other.make_url("/secret")), 10_000)
    finally:
        await fetcher.aclose()
    assert hits == []


async def test_stops_at_the_byte_cap(servers: tuple[TestServer, TestServer, list[str]]) -> None:
    allowed, _, _ = servers
    fetcher = AttachmentFetcher(cdn_hosts=(), local_origins=[str(allowed.make_url("/"))])
    try:
        with pytest.raises(DownloadTooLarge):
            await fetcher.fetch(str(allowed.make_url("/ok.png")), 100)
    finally:
        await fetcher.aclose()


async def test_an_allowed_host_resolving_to_loopback_is_refused() -> None:
    """DNS rebinding: a CDN host name that points at this machine is not connected to."""
    fetcher = AttachmentFetcher(cdn_hosts=["localhost"])
    try:
        with pytest.raises(DownloadRefused):
            await fetcher.fetch("https://localhost/x.png", 10_000)
    finally:
        await fetcher.aclose()


async def test_the_resolver_keeps_loopback_only_for_trusted_hosts() -> None:
    with pytest.raises(OSError, match="non-public"):
        await PublicOnlyResolver().resolve("localhost", 443)
    trusted = await PublicOnlyResolver(["localhost"]).resolve("localhost", 443)
    assert trusted


def test_only_https_cdn_hosts_and_the_configured_origins_are_allowed() -> None:
    fetcher = AttachmentFetcher(local_origins=["http://127.0.0.1:5000/api/v10"])
    assert fetcher.allows("https://cdn.discordapp.com/attachments/1/2/a.png")
    assert fetcher.allows("https://media.discordapp.net/attachments/1/2/a.png")
    assert fetcher.allows("http://127.0.0.1:5000/attachments/1/2/a.png")
    assert not fetcher.allows("http://cdn.discordapp.com/attachments/1/2/a.png")
    assert not fetcher.allows("https://cdn.discordapp.com:8443/a.png")
    assert not fetcher.allows("http://127.0.0.1:9464/status")
    assert not fetcher.allows("https://evil.example/a.png")
    assert not fetcher.allows("file:///etc/passwd")
    assert not fetcher.allows("not a url")

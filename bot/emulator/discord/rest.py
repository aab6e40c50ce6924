"""The REST pipeline: routing, auth, injected faults, rate limits, body parsing, validation."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

from bot.emulator.discord import spec
from bot.emulator.discord.faults import FaultInjector
from bot.emulator.discord.ratelimit import DEFAULT_BUCKET, BucketSpec, RateLimiter
from bot.emulator.discord.records import Activity

__all__ = ["Call", "DiscordError", "Reply", "RestAPI", "Route", "Upload"]

JSON = dict[str, Any]
_LOG = logging.getLogger(__name__)
_API_PREFIX = re.compile(r"^/api(?:/v\d+)?(/.*)$")
_PARAM = re.compile(r"\{(\w+)\}")


class DiscordError(Exception):
    """An error answer in Discord's shape; ``violation`` marks mistakes of the bot."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        errors: JSON | None = None,
        violation: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        self.violation = violation

    def body(self) -> JSON:
        """Return the JSON body Discord sends for this error."""
        body: JSON = {"message": self.message, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        return body


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart request."""

    filename: str
    content_type: str
    data: bytes


@dataclass
class Call:
    """One parsed REST request handed to a route handler."""

    method: str
    path: str
    params: dict[str, str]
    query: Mapping[str, str]
    body: Any = None
    files: dict[str, Upload] = field(default_factory=dict)

    def snowflake(self, name: str) -> int:
        """Return a path parameter as an id; a malformed id is answered as unknown."""
        value = self.params[name]
        if not value.isdigit():
            raise DiscordError(404, 0, "404: Not Found")
        return int(value)

    def flag(self, name: str) -> bool:
        """Return a boolean query parameter."""
        return self.query.get(name, "false").lower() == "true"

    def json_body(self) -> JSON:
        """Return the body as a JSON object (empty when there was none)."""
        if self.body is None:
            return {}
        if not isinstance(self.body, dict):
            raise DiscordError(400, 50109, "The request body contains invalid JSON.")
        return self.body


@dataclass
class Reply:
    """A handler's answer: status and JSON body (None means no content)."""

    body: Any = None
    status: int = 200


Handler = Callable[[Call], Awaitable[Reply]]


@dataclass
class Route:
    """A REST route: template, handler, and the policies that apply to it."""

    method: str
    template: str
    handler: Handler
    auth: bool = True
    bucket: BucketSpec | None = DEFAULT_BUCKET
    major: tuple[str, ...] = ()
    operation: str | None = None
    pattern: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        if self.bucket is DEFAULT_BUCKET:
            # Discord gives every route its own bucket hash; a readable one helps debugging.
            name = f"{self.method} {self.template}"
            self.bucket = BucketSpec(name, DEFAULT_BUCKET.limit, DEFAULT_BUCKET.period)
        # split() alternates literal text and parameter names.
        parts = _PARAM.split(self.template)
        regex = "".join(
            re.escape(part) if index % 2 == 0 else f"(?P<{part}>[^/]+)"
            for index, part in enumerate(parts)
        )
        self.pattern = re.compile(f"^{regex}$")


class RestAPI:
    """Answers ``/api/v{N}/...`` requests the way Discord does."""

    def __init__(
        self,
        *,
        token: str,
        routes: list[Route],
        activity: Activity,
        faults: FaultInjector,
        limiter: RateLimiter | None,
        validate: bool,
    ) -> None:
        self._authorization = f"Bot {token}"
        self._routes = routes
        self._activity = activity
        self._faults = faults
        self._limiter = limiter
        self._validate = validate
        self.rate_limited = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one REST request and log it."""
        try:
            response = await self._answer(request)
        except Exception:
            # An emulator bug must still look like Discord to the client, and be loud in logs.
            _LOG.exception("emulator failed on %s %s", request.method, request.path)
            body = {"message": "500: Internal Server Error", "code": 0}
            response = web.json_response(body, status=500)
        if response.status == 429:
            self.rate_limited += 1
        self._activity.record_request(request.method, request.path, response.status)
        return response

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        headers: dict[str, str] = {}
        try:
            route, params = self._match(request.method, request.path)
            if route.auth and request.headers.get("Authorization") != self._authorization:
                raise DiscordError(401, 0, "401: Unauthorized")
            fault = self._faults.take(request.path)
            if fault is not None and fault.kind == "status":
                status, body, fault_headers = fault.response()
                return web.json_response(body, status=status, headers=fault_headers)
            if self._limiter is not None:
                major = ":".join(params.get(name, "") for name in route.major)
                verdict = self._limiter.check(route.bucket, major, counts_globally=route.auth)
                headers = verdict.headers
                if not verdict.allowed:
                    return web.json_response(verdict.body, status=429, headers=headers)
            call = await self._parse(request, params)
            if self._validate and route.operation is not None:
                self._check_schema(route, call)
            reply = await route.handler(call)
            if fault is not None:  # carried out; now the client never (or late) hears of it
                await self._after_the_fact(request, fault.kind, fault.delay_s)
        except DiscordError as error:
            if error.violation:
                self._activity.record_violation(
                    f"{request.method} {request.path}: {error.code} {error.message}"
                    + (f" {json.dumps(error.errors)}" if error.errors else "")
                )
            return web.json_response(error.body(), status=error.status, headers=headers)
        if reply.body is None:
            return web.Response(status=204, headers=headers)
        return web.json_response(reply.body, status=reply.status, headers=headers)

    async def _after_the_fact(self, request: web.Request, kind: str, delay_s: float) -> None:
        if kind == "slow":
            await asyncio.sleep(delay_s)
        elif kind == "drop" and request.transport is not None:
            request.transport.close()

    def _match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        found = _API_PREFIX.match(path)
        if found is None:
            raise DiscordError(404, 0, "404: Not Found")
        subpath = found.group(1)
        path_matched = False
        for route in self._routes:
            if (match := route.pattern.match(subpath)) is None:
                continue
            path_matched = True
            if route.method == method:
                return route, match.groupdict()
        if path_matched:
            raise DiscordError(405, 0, "405: Method Not Allowed")
        raise DiscordError(404, 0, "404: Not Found")

    async def _parse(self, request: web.Request, params: dict[str, str]) -> Call:
        call = Call(request.method, request.path, params, request.query)
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader) or part.name is None:
                    continue
                if part.name == "payload_json":
                    call.body = _loads(await part.read(decode=True))
                else:
                    call.files[part.name] = Upload(
                        part.filename or part.name,
                        part.headers.get("Content-Type", "application/octet-stream"),
                        bytes(await part.read(decode=True)),
                    )
        elif request.can_read_body:
            raw = await request.read()
            if raw:
                call.body = _loads(raw)
        return call

    def _check_schema(self, route: Route, call: Call) -> None:
        assert route.operation is not None
        problems = spec.validate(route.operation, call.body if call.body is not None else {})
        if problems:
            raise DiscordError(
                400,
                50035,
                "Invalid Form Body",
                errors=spec.discord_errors(problems),
                violation=True,
            )


def _loads(raw: bytes | bytearray) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise DiscordError(
            400, 50109, "The request body contains invalid JSON.", violation=True
        ) from None


async def not_found(_: web.Request) -> web.Response:
    """Answer unknown non-API paths with Discord's 404 body."""
    return web.json_response({"message": "404: Not Found", "code": 0}, status=404)

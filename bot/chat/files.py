"""Turning a message's attachments into inline parts for the model, or a clear refusal.

All the files of one question (the message's and the replied-to message's) share one byte
budget, `total_max_bytes` (ATTACHMENTS_MAX_TOTAL_BYTES), below what the provider takes in one
request: a question whose files cannot fit is refused before anything is downloaded, and each
download may use only what the files before it left, so lying sizes cannot get past it either.
"""

from __future__ import annotations

import hashlib

from bot.chat.access import VideoGate
from bot.chat.attachments import (
    AttachmentInfo,
    check_size,
    classify,
    estimate_video_tokens,
    format_size,
    media_type,
)
from bot.chat.models import IncomingMessage
from bot.chat.ports import DiscordPort, DownloadRefused, DownloadTooLarge
from bot.chat.refusal import Refusal
from bot.llm.types import InlineFile

__all__ = ["VIDEO_DEGRADED_TEXT", "FileLoader"]

VIDEO_DEGRADED_TEXT = (
    "I'm under heavy load, so I'm not looking at videos for now. Text and images still work; "
    "please send the video again later."
)


class FileLoader:
    """Checks and downloads the images and videos on a message (and on the one it replies to)."""

    def __init__(
        self,
        discord: DiscordPort,
        *,
        image_max_bytes: int,
        video_max_bytes: int,
        video_limiter: VideoGate,
        total_max_bytes: int = 14 * 1024 * 1024,
    ) -> None:
        self._discord = discord
        self._total_max = total_max_bytes
        self._image_max = image_max_bytes
        self._video_max = video_max_bytes
        self._video_limiter = video_limiter

    async def load(
        self, msg: IncomingMessage, *, video: bool = True
    ) -> tuple[tuple[InlineFile, ...], Refusal | None]:
        """The files to send, or a refusal; `video=False` (a degraded bot) refuses videos."""
        attachments = list(msg.attachments)
        if msg.quoted is not None:
            attachments.extend(msg.quoted.attachments)
        if not attachments:
            return (), None
        checked: list[tuple[AttachmentInfo, str, int]] = []
        video_tokens = 0
        for att in attachments:
            if att.size < 0:
                return (), Refusal(
                    "attachment_invalid", f"`{att.filename}` has an invalid size; I skipped it."
                )
            info = AttachmentInfo(att.filename, att.content_type, att.size, att.url)
            kind = classify(info)
            if kind == "unsupported":
                return (), Refusal(
                    "unsupported_attachment",
                    f"I can read images (png, jpeg, gif, webp) and videos, but not "
                    f"`{att.filename}`.",
                )
            refusal = check_size(info, self._image_max, self._video_max)
            if refusal is not None:
                return (), refusal
            if kind == "video":
                if not video:
                    return (), Refusal("video_degraded", VIDEO_DEGRADED_TEXT)
                video_tokens += estimate_video_tokens(att.size)
            limit = self._video_max if kind == "video" else self._image_max
            checked.append((info, media_type(info) or "application/octet-stream", limit))
        declared = sum(att.size for att in attachments)
        if declared > self._total_max:
            return (), Refusal(
                "attachments_too_large",
                f"These files add up to {format_size(declared)}, more than the "
                f"{format_size(self._total_max)} I can send to the model with one question. "
                "Try fewer or smaller ones.",
            )
        if video_tokens:
            # Reserve the budget before downloading, so two videos at once cannot both pass.
            refusal = await self._video_limiter.acquire(msg.author_id, video_tokens)
            if refusal is not None:
                return (), refusal
        files: list[InlineFile] = []
        left = self._total_max
        for att, (info, mime, limit) in zip(attachments, checked, strict=True):
            try:
                data = await self._discord.download(att, min(limit, left))
            except DownloadTooLarge:
                return (), Refusal(
                    "attachment_too_large", f"`{info.filename}` is larger than I can accept."
                )
            except DownloadRefused:
                return (), Refusal(
                    "attachment_not_on_discord",
                    f"`{info.filename}` is not stored on Discord, so I did not open it.",
                )
            left -= len(data)
            files.append(InlineFile(mime, data, hashlib.sha256(data).hexdigest()))
        return tuple(files), None

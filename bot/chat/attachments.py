"""What an attachment is and whether the bot can take it, decided from its metadata alone."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from bot.chat.refusal import Refusal

__all__ = [
    "ASSUMED_VIDEO_BITRATE_BPS",
    "AUDIO_TOKENS_PER_SECOND",
    "VIDEO_TOKENS_PER_SECOND",
    "AttachmentInfo",
    "AttachmentKind",
    "check_size",
    "classify",
    "estimate_video_tokens",
    "format_size",
    "media_type",
]

AttachmentKind = Literal["image", "video", "unsupported"]

VIDEO_TOKENS_PER_SECOND = 263
"""Gemini's rate for video frames (sampled at 1 frame per second), per its token docs."""
AUDIO_TOKENS_PER_SECOND = 32
"""Gemini's rate for the audio track, counted on top of the frames."""
ASSUMED_VIDEO_BITRATE_BPS = 2_000_000
"""Bits per second assumed to turn a file size into a duration. Phone video is often 5 to
15 Mbit/s; assuming less over-estimates the duration, which is the safe side for a budget."""

# Canonical MIME type by the type Discord reports and by file extension. Gemini's own names
# are used for video (video/mov, video/avi) since its list does not include the aliases.
_IMAGE_TYPES = {
    "image/png": "image/png",
    "image/jpeg": "image/jpeg",
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/gif": "image/gif",
    "image/webp": "image/webp",
    "image/heic": "image/heic",
    "image/heif": "image/heif",
}
_VIDEO_TYPES = {
    "video/mp4": "video/mp4",
    "video/webm": "video/webm",
    "video/quicktime": "video/mov",
    "video/mov": "video/mov",
    "video/mpeg": "video/mpeg",
    "video/mpg": "video/mpg",
    "video/x-msvideo": "video/avi",
    "video/avi": "video/avi",
    "video/x-flv": "video/x-flv",
    "video/x-ms-wmv": "video/wmv",
    "video/wmv": "video/wmv",
    "video/3gpp": "video/3gpp",
}
_EXTENSIONS = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "jfif": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "heic": "image/heic",
    "heif": "image/heif",
    "mp4": "video/mp4",
    "m4v": "video/mp4",
    "webm": "video/webm",
    "mov": "video/mov",
    "mpeg": "video/mpeg",
    "mpg": "video/mpg",
    "avi": "video/avi",
    "flv": "video/x-flv",
    "wmv": "video/wmv",
    "3gp": "video/3gpp",
}
# Types that say nothing about the content: fall back to the file extension.
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    """An attachment as Discord describes it; `size` is in bytes."""

    filename: str
    content_type: str | None
    size: int
    url: str


def media_type(att: AttachmentInfo) -> str | None:
    """The MIME type to send to Gemini, or None if the attachment is not a supported medium.

    A specific content type decides; a missing or generic one defers to the file extension.
    """
    content_type = (att.content_type or "").split(";", 1)[0].strip().lower()
    known = _IMAGE_TYPES.get(content_type) or _VIDEO_TYPES.get(content_type)
    if known or content_type not in _GENERIC_TYPES:
        return known
    _, dot, extension = att.filename.rpartition(".")
    return _EXTENSIONS.get(extension.lower()) if dot else None


def classify(att: AttachmentInfo) -> AttachmentKind:
    """ "image", "video" or "unsupported", from the content type or else the extension."""
    mime = media_type(att)
    if mime is None:
        return "unsupported"
    return "image" if mime.startswith("image/") else "video"


def format_size(size_bytes: int, decimals: int = 1) -> str:
    """A size for people: "512 bytes", "12.3 KB", "10 MB" (binary units, as Discord uses)."""
    if size_bytes < 1024:
        return f"{size_bytes} bytes"
    value, unit = (
        (size_bytes / 1024, "KB") if size_bytes < 1024 * 1024 else (size_bytes / 1024**2, "MB")
    )
    text = f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    return f"{text} {unit}"


def check_size(att: AttachmentInfo, image_max_bytes: int, video_max_bytes: int) -> Refusal | None:
    """A refusal if an image or video is over its size limit; None otherwise (or if neither)."""
    kind = classify(att)
    if kind == "unsupported":
        return None
    limit = image_max_bytes if kind == "image" else video_max_bytes
    if att.size <= limit:
        return None
    # Rounding can make 10.02 MB read as the 10 MB limit; add decimals until they differ.
    for decimals in (1, 2, 3):
        size_text, limit_text = format_size(att.size, decimals), format_size(limit, decimals)
        if size_text != limit_text:
            break
    else:
        size_text, limit_text = f"{att.size:,} bytes", f"{limit:,} bytes"
    return Refusal(f"{kind}_too_large", f"That {kind} is {size_text}; the limit is {limit_text}.")


def estimate_video_tokens(
    size_bytes: int, bitrate_bps: int = ASSUMED_VIDEO_BITRATE_BPS, with_audio: bool = True
) -> int:
    """Tokens Gemini will likely count for a video of `size_bytes`, before downloading it.

    Duration is guessed as size / bitrate, rounded up to whole seconds (Gemini samples one
    frame per second); each second costs VIDEO_TOKENS_PER_SECOND, plus AUDIO_TOKENS_PER_SECOND
    for the sound track.
    """
    if size_bytes < 0:
        raise ValueError(f"size_bytes must not be negative, got {size_bytes}")
    if bitrate_bps <= 0:
        raise ValueError(f"bitrate_bps must be positive, got {bitrate_bps}")
    seconds = math.ceil(size_bytes * 8 / bitrate_bps)
    per_second = VIDEO_TOKENS_PER_SECOND + (AUDIO_TOKENS_PER_SECOND if with_audio else 0)
    return seconds * per_second

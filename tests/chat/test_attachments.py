"""Tests for bot.chat.attachments: kinds, sizes and video token estimates from metadata."""

from __future__ import annotations

import pytest

from bot.chat.attachments import (
    ASSUMED_VIDEO_BITRATE_BPS,
    AttachmentInfo,
    check_size,
    classify,
    estimate_video_tokens,
    format_size,
    media_type,
)
from bot.chat.refusal import REFUSAL_REASONS

MB = 1024 * 1024


def att(filename: str, content_type: str | None = None, size: int = 1_000) -> AttachmentInfo:
    return AttachmentInfo(filename, content_type, size, f"https://cdn.example/{filename}")


@pytest.mark.parametrize(
    ("filename", "content_type", "kind", "mime"),
    [
        ("a.png", "image/png", "image", "image/png"),
        ("a.bin", "image/jpeg", "image", "image/jpeg"),  # a specific type beats the extension
        ("a", "image/jpg", "image", "image/jpeg"),
        ("a.gif", "image/gif; charset=binary", "image", "image/gif"),
        ("a.webp", "IMAGE/WEBP", "image", "image/webp"),
        ("clip.mp4", "video/mp4", "video", "video/mp4"),
        ("clip.mov", "video/quicktime", "video", "video/mov"),
        ("clip.webm", "video/webm", "video", "video/webm"),
        ("clip.mpg", "video/mpeg", "video", "video/mpeg"),
        # No or generic type: the extension decides.
        ("photo.JPEG", None, "image", "image/jpeg"),
        ("photo.png", "application/octet-stream", "image", "image/png"),
        ("clip.MOV", "", "video", "video/mov"),
        ("clip.mkv", None, "unsupported", None),
        ("README", None, "unsupported", None),
        # A specific unsupported type is not overridden by the extension.
        ("notes.png", "text/plain", "unsupported", None),
        ("image.bmp", "image/bmp", "unsupported", None),
        ("song.mp3", "audio/mpeg", "unsupported", None),
    ],
)
def test_classify(filename: str, content_type: str | None, kind: str, mime: str | None) -> None:
    attachment = att(filename, content_type)
    assert classify(attachment) == kind
    assert media_type(attachment) == mime


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 bytes"),
        (1023, "1023 bytes"),
        (1024, "1 KB"),
        (1536, "1.5 KB"),
        (10 * MB, "10 MB"),
        (int(12.34 * MB), "12.3 MB"),
    ],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


def test_image_over_the_limit_is_refused_with_both_sizes() -> None:
    refusal = check_size(att("a.png", "image/png", int(12.3 * MB)), 10 * MB, 50 * MB)
    assert refusal is not None
    assert refusal.reason == "image_too_large"
    assert refusal.reason in REFUSAL_REASONS
    assert refusal.message == "That image is 12.3 MB; the limit is 10 MB."


def test_video_uses_the_video_limit() -> None:
    video = att("clip.mp4", "video/mp4", 30 * MB)
    assert check_size(video, image_max_bytes=10 * MB, video_max_bytes=50 * MB) is None
    refusal = check_size(video, image_max_bytes=100 * MB, video_max_bytes=20 * MB)
    assert refusal is not None
    assert refusal.reason == "video_too_large"
    assert refusal.message == "That video is 30 MB; the limit is 20 MB."


def test_size_at_the_limit_is_accepted() -> None:
    assert check_size(att("a.png", "image/png", 10 * MB), 10 * MB, 10 * MB) is None


def test_sizes_just_over_the_limit_do_not_read_as_equal() -> None:
    refusal = check_size(att("a.png", "image/png", 10 * MB + 20_000), 10 * MB, 10 * MB)
    assert refusal is not None
    assert refusal.message == "That image is 10.02 MB; the limit is 10 MB."
    refusal = check_size(att("a.png", "image/png", 10 * MB + 1), 10 * MB, 10 * MB)
    assert refusal is not None
    assert refusal.message == "That image is 10,485,761 bytes; the limit is 10,485,760 bytes."


def test_unsupported_attachments_have_no_size_limit_here() -> None:
    assert check_size(att("a.zip", "application/zip", 10**9), 1, 1) is None


def test_video_token_estimate() -> None:
    one_second = ASSUMED_VIDEO_BITRATE_BPS // 8
    assert estimate_video_tokens(0) == 0
    assert estimate_video_tokens(1) == 263 + 32  # a partial second still costs a frame
    assert estimate_video_tokens(one_second) == 263 + 32
    assert estimate_video_tokens(60 * one_second) == 60 * (263 + 32)
    assert estimate_video_tokens(60 * one_second, with_audio=False) == 60 * 263
    # Lower bitrate, longer video, more tokens.
    assert estimate_video_tokens(10 * MB, bitrate_bps=1_000_000) > estimate_video_tokens(10 * MB)


def test_video_token_estimate_grows_with_size() -> None:
    estimates = [estimate_video_tokens(size) for size in range(0, 50 * MB, MB)]
    assert estimates == sorted(estimates)


@pytest.mark.parametrize(("size", "bitrate"), [(-1, ASSUMED_VIDEO_BITRATE_BPS), (1, 0)])
def test_video_token_estimate_rejects_bad_input(size: int, bitrate: int) -> None:
    with pytest.raises(ValueError, match="must"):
        estimate_video_tokens(size, bitrate_bps=bitrate)

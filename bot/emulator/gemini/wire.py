"""Gemini API wire shapes: error bodies, responses and token counts, as Google sends them."""

from __future__ import annotations

import math
from typing import Any

from bot.emulator.gemini.records import get_field

__all__ = [
    "IMAGE_TOKENS",
    "PromptTokens",
    "api_key_invalid",
    "api_key_missing",
    "blocked_prompt_response",
    "empty_response",
    "error_body",
    "format_duration",
    "generate_response",
    "invalid_argument",
    "model_info",
    "model_not_found",
    "prompt_tokens",
    "rate_limited",
    "safety_stopped_response",
    "text_tokens",
    "usage_metadata",
]

# Gemini bills each image as a fixed 258 tokens (images up to 384 px per side).
IMAGE_TOKENS = 258
# Rough English average; close enough for budgets and dashboards.
CHARS_PER_TOKEN = 4

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_STATUS_MESSAGES = {
    500: (
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting"
    ),
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}
_SERVICE = "generativelanguage.googleapis.com"
_RATE_LIMITS_URL = "https://ai.google.dev/gemini-api/docs/rate-limits"

_HARM_CATEGORIES = (
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
)


def error_body(
    status: int, message: str | None = None, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Google's `{"error": {code, message, status[, details]}}` for an HTTP status."""
    error: dict[str, Any] = {
        "code": status,
        "message": message or _STATUS_MESSAGES.get(status, "Request failed."),
        "status": _STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if details:
        error["details"] = details
    return {"error": error}


def invalid_argument(message: str) -> dict[str, Any]:
    """400 INVALID_ARGUMENT, as for a malformed body."""
    return error_body(400, message)


def api_key_invalid() -> dict[str, Any]:
    """400 API_KEY_INVALID, what the API answers for a wrong key."""
    message = "API key not valid. Please pass a valid API key."
    return error_body(
        400,
        message,
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": _SERVICE},
            },
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": message,
            },
        ],
    )


def api_key_missing() -> dict[str, Any]:
    """403 PERMISSION_DENIED, what the API answers when no key is sent at all."""
    return error_body(
        403,
        "Method doesn't allow unregistered callers (callers without established identity). "
        "Please use API Key or other form of API consumer identity to call this API.",
    )


def model_not_found(model: str, api_version: str) -> dict[str, Any]:
    """404 for a model the emulator was told not to know."""
    return error_body(
        404,
        f"models/{model} is not found for API version {api_version}, or is not supported for "
        "generateContent. Call ListModels to see the list of available models and their "
        "supported methods.",
    )


def format_duration(seconds: float) -> str:
    """A protobuf Duration in JSON form: "12s", "0.500s" (3, 6 or 9 fraction digits)."""
    nanos_total = round(max(seconds, 0.0) * 1_000_000_000)
    whole, nanos = divmod(nanos_total, 1_000_000_000)
    if nanos == 0:
        return f"{whole}s"
    fraction = f"{nanos:09d}"
    while fraction.endswith("000"):
        fraction = fraction[:-3]
    return f"{whole}.{fraction}s"


def rate_limited(retry_delay_s: float, model: str, limit: int | None = None) -> dict[str, Any]:
    """429 RESOURCE_EXHAUSTED with QuotaFailure, Help and RetryInfo, like the real free tier.

    `limit` is the requests-per-minute quota named in the message (the free tier's 10 if unset).
    """
    limit_text = str(limit) if limit is not None else "10"
    metric = f"{_SERVICE}/generate_content_free_tier_requests"
    message = (
        "You exceeded your current quota, please check your plan and billing details. For more "
        f"information on this error, head to: {_RATE_LIMITS_URL}. To monitor your current usage, "
        f"head to: https://ai.dev/usage?tab=rate-limit. \n* Quota exceeded for metric: {metric}, "
        f"limit: {limit_text}, model: {model}\nPlease retry in {retry_delay_s:g}s."
    )
    return error_body(
        429,
        message,
        [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": metric,
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        "quotaDimensions": {"location": "global", "model": model},
                        "quotaValue": limit_text,
                    }
                ],
            },
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [
                    {"description": "Learn more about Gemini API quotas", "url": _RATE_LIMITS_URL}
                ],
            },
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": format_duration(retry_delay_s),
            },
        ],
    )


def text_tokens(text: str) -> int:
    """Tokens for a piece of text at about four characters per token."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


class PromptTokens:
    """Prompt token counts split by modality, as `promptTokensDetails` reports them."""

    __slots__ = ("media", "text")

    def __init__(self, text: int, media: int) -> None:
        self.text = text
        self.media = media

    @property
    def total(self) -> int:
        """All prompt tokens."""
        return self.text + self.media

    def details(self) -> list[dict[str, Any]]:
        """The `promptTokensDetails` list."""
        details: list[dict[str, Any]] = [{"modality": "TEXT", "tokenCount": self.text}]
        if self.media:
            details.append({"modality": "IMAGE", "tokenCount": self.media})
        return details


def _content_parts(content: Any) -> list[dict[str, Any]]:
    parts = get_field(content, "parts")
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def prompt_tokens(body: dict[str, Any]) -> PromptTokens:
    """Count a request's prompt: text at ~4 chars/token, every inline or file part 258 tokens."""
    contents = get_field(body, "contents")
    turns: list[Any] = list(contents) if isinstance(contents, list) else []
    turns.append(get_field(body, "systemInstruction"))
    text = media = 0
    for content in turns:
        for part in _content_parts(content):
            if isinstance(part.get("text"), str):
                text += text_tokens(part["text"])
            elif get_field(part, "inlineData") is not None or get_field(part, "fileData"):
                media += IMAGE_TOKENS
    return PromptTokens(text, media)


def usage_metadata(
    prompt: PromptTokens,
    candidates: int,
    thoughts: int = 0,
    *,
    with_candidates: bool = True,
    cached: int = 0,
) -> dict[str, Any]:
    """`usageMetadata` with the total the API reports (prompt + candidates + thoughts).

    `cached` prompt tokens (at most the prompt) are reported as read from the context cache:
    part of `promptTokenCount`, as the API counts them.
    """
    usage: dict[str, Any] = {"promptTokenCount": prompt.total}
    if with_candidates:
        usage["candidatesTokenCount"] = candidates
    usage["totalTokenCount"] = prompt.total + candidates + thoughts
    usage["promptTokensDetails"] = prompt.details()
    cached = min(max(cached, 0), prompt.total)
    if cached:
        usage["cachedContentTokenCount"] = cached
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


def _envelope(model: str, response_id: str, **fields: Any) -> dict[str, Any]:
    return {**fields, "modelVersion": model, "responseId": response_id}


def generate_response(
    *,
    model: str,
    response_id: str,
    text: str | None,
    finish_reason: str | None,
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    """One GenerateContentResponse (a whole answer or one stream chunk)."""
    candidate: dict[str, Any] = {}
    if text is not None:
        candidate["content"] = {"parts": [{"text": text}], "role": "model"}
    if finish_reason is not None:
        candidate["finishReason"] = finish_reason
    candidate["index"] = 0
    fields: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        fields["usageMetadata"] = usage
    return _envelope(model, response_id, **fields)


def _safety_ratings() -> list[dict[str, Any]]:
    ratings: list[dict[str, Any]] = []
    for category in _HARM_CATEGORIES:
        if category == "HARM_CATEGORY_HARASSMENT":
            ratings.append({"category": category, "probability": "HIGH", "blocked": True})
        else:
            ratings.append({"category": category, "probability": "NEGLIGIBLE"})
    return ratings


def blocked_prompt_response(model: str, response_id: str, prompt: PromptTokens) -> dict[str, Any]:
    """The prompt itself was blocked: `promptFeedback.blockReason = SAFETY`, no candidates."""
    return _envelope(
        model,
        response_id,
        promptFeedback={"blockReason": "SAFETY", "safetyRatings": _safety_ratings()},
        usageMetadata=usage_metadata(prompt, 0, with_candidates=False),
    )


def safety_stopped_response(model: str, response_id: str, prompt: PromptTokens) -> dict[str, Any]:
    """The answer was stopped: one candidate with `finishReason = SAFETY` and no content."""
    return _envelope(
        model,
        response_id,
        candidates=[{"finishReason": "SAFETY", "index": 0, "safetyRatings": _safety_ratings()}],
        usageMetadata=usage_metadata(prompt, 0, with_candidates=False),
    )


def empty_response(model: str, response_id: str, prompt: PromptTokens) -> dict[str, Any]:
    """HTTP 200 with an empty candidate list."""
    return _envelope(
        model,
        response_id,
        candidates=[],
        usageMetadata=usage_metadata(prompt, 0, with_candidates=False),
    )


def model_info(model: str) -> dict[str, Any]:
    """`GET models/{model}`: limits and methods of a current Flash-class model."""
    return {
        "name": f"models/{model}",
        "version": "001",
        "displayName": model.replace("-", " ").title(),
        "description": "Emulated Gemini model answering from a local test server.",
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": [
            "generateContent",
            "countTokens",
            "streamGenerateContent",
        ],
        "temperature": 1,
        "topP": 0.95,
        "topK": 64,
        "maxTemperature": 2,
        "thinking": True,
    }

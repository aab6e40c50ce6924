"""The Alertmanager v4 webhook payload: parsing, strict types, short reasons."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.healing.payload import PayloadError, WebhookPayload, parse_payload
from bot.healing.testing import sample_alert, sample_payload

# A two-alert group (one resolved) written the way Alertmanager 0.25 encodes it: Go's key order,
# the zero endsAt of a firing alert, nanosecond timestamps, `&` escaped as \u0026.
ALERTMANAGER_025_BODY = b"""{"receiver":"llmbot-heal","status":"firing","alerts":[\
{"status":"firing","labels":{"alertname":"LLMBotHighMemory","heal":"memory","instance":"127.0.0.1:9464",\
"job":"llmbot","severity":"warning"},"annotations":{"description":"RSS is 612 MiB.",\
"summary":"Bot memory is high"},"startsAt":"2024-05-01T10:00:00.123Z",\
"endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus:9090/graph?g0.expr=\
process_resident_memory_bytes%7Bjob%3D%22llmbot%22%7D+%3E+5.36870912e%2B08\\u0026g0.tab=1",\
"fingerprint":"4f6a1c2b3d4e5f60"},{"status":"resolved","labels":{"alertname":"LLMBotHighMemory",\
"heal":"memory","instance":"127.0.0.1:9465","job":"llmbot","severity":"warning"},\
"annotations":{"description":"RSS is 540 MiB.","summary":"Bot memory is high"},\
"startsAt":"2024-05-01T09:50:00.5Z","endsAt":"2024-05-01T10:01:30.123456789Z",\
"generatorURL":"http://prometheus:9090/graph?g0.expr=x\\u0026g0.tab=1",\
"fingerprint":"9e1d2c3b4a5f6e70"}],"groupLabels":{"alertname":"LLMBotHighMemory"},\
"commonLabels":{"alertname":"LLMBotHighMemory","heal":"memory","job":"llmbot",\
"severity":"warning"},"commonAnnotations":{"summary":"Bot memory is high"},\
"externalURL":"http://alertmanager:9093","version":"4",\
"groupKey":"{}/{heal=~\\"^(?:.+)$\\"}:{alertname=\\"LLMBotHighMemory\\"}","truncatedAlerts":0}
"""


def encode(data: Any) -> bytes:
    return json.dumps(data).encode()


def reason_for(data: Any) -> str:
    with pytest.raises(PayloadError) as caught:
        parse_payload(data if isinstance(data, bytes) else encode(data))
    return caught.value.reason


def test_alertmanager_025_body_parses() -> None:
    payload = parse_payload(ALERTMANAGER_025_BODY)
    assert payload.version == "4"
    assert payload.status == "firing"
    assert payload.receiver == "llmbot-heal"
    assert payload.group_key == '{}/{heal=~"^(?:.+)$"}:{alertname="LLMBotHighMemory"}'
    assert payload.truncated_alerts == 0
    assert payload.group_labels == {"alertname": "LLMBotHighMemory"}
    assert payload.common_labels["heal"] == "memory"
    assert payload.external_url == "http://alertmanager:9093"
    firing, resolved = payload.alerts
    assert firing.status == "firing"
    assert firing.labels["instance"] == "127.0.0.1:9464"
    assert firing.starts_at == datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=UTC)
    assert firing.ends_at == datetime(1, 1, 1, tzinfo=UTC)
    assert firing.generator_url.endswith("&g0.tab=1")
    assert firing.fingerprint == "4f6a1c2b3d4e5f60"
    # Go writes nanoseconds; microseconds are all Python keeps.
    assert resolved.ends_at == datetime(2024, 5, 1, 10, 1, 30, 123456, tzinfo=UTC)


def test_sample_payload_parses() -> None:
    payload = parse_payload(encode(sample_payload(sample_alert(), sample_alert(status="resolved"))))
    assert [alert.status for alert in payload.alerts] == ["firing", "resolved"]
    assert isinstance(payload, WebhookPayload)


def test_extra_fields_are_tolerated() -> None:
    data = sample_payload()
    data["newTopLevelField"] = {"anything": [1, 2]}
    data["alerts"][0]["silencedBy"] = []
    assert parse_payload(encode(data)).alerts[0].fingerprint == "4f6a1c2b3d4e5f60"


def test_short_hand_written_payload_is_enough() -> None:
    body = {
        "version": "4",
        "status": "firing",
        "alerts": [
            {"status": "firing", "labels": {"heal": "disk"}, "startsAt": "2024-05-01T10:00:00Z",
             "fingerprint": "abc"}
        ],
    }  # fmt: skip
    payload = parse_payload(encode(body))
    assert payload.alerts[0].ends_at is None
    assert payload.common_labels == {}


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d.update(version="3"), 'version must be "4", got "3"'),
        (lambda d: d.update(version=4), 'version must be "4" (a string)'),
        (lambda d: d.pop("version"), "version is required"),
        (lambda d: d.update(status="pending"), "status must be 'firing' or 'resolved'"),
        (lambda d: d.update(alerts={}), "alerts must be an array"),
        (lambda d: d.update(truncatedAlerts=True), "truncatedAlerts must be an integer"),
        (lambda d: d.update(truncatedAlerts="0"), "truncatedAlerts must be an integer"),
        (lambda d: d.update(truncatedAlerts=-1), "truncatedAlerts must not be negative"),
        (lambda d: d.update(commonLabels=[]), "commonLabels must be an object"),
        (lambda d: d["alerts"][2].update(labels=[]), "alerts[2].labels must be an object"),
        (lambda d: d["alerts"][0]["labels"].update(instance=9464),
         "alerts[0].labels.instance must be a string"),
        (lambda d: d["alerts"][1].pop("fingerprint"), "alerts[1].fingerprint is required"),
        (lambda d: d["alerts"][1].update(fingerprint=""),
         "alerts[1].fingerprint must not be empty"),
        (lambda d: d["alerts"][0].update(startsAt="yesterday"),
         "alerts[0].startsAt must be an RFC 3339 timestamp"),
        (lambda d: d["alerts"][0].update(startsAt=1714557600),
         "alerts[0].startsAt must be an RFC 3339 timestamp"),
        (lambda d: d["alerts"].append("alert"), "alerts[3] must be an object"),
    ],
)  # fmt: skip
def test_reasons_name_the_field(mutate: Any, reason: str) -> None:
    data = sample_payload(
        sample_alert(), sample_alert(fingerprint="b"), sample_alert(fingerprint="c")
    )
    mutate(data)
    assert reason_for(data) == reason


def test_several_errors_are_counted() -> None:
    data = sample_payload()
    data["status"] = 1
    data["alerts"][0]["labels"] = None
    assert reason_for(data) == "status must be 'firing' or 'resolved' (and 1 more)"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "body is not valid JSON"),
        (b'{"version": "4", ', "body is not valid JSON"),
        (b"\xff\xfe\x00", "body is not valid JSON"),
        (b"[]", "payload must be a JSON object"),
        (b"null", "payload must be a JSON object"),
        (b'"4"', "payload must be a JSON object"),
        (b"[" * 5000 + b"]" * 5000, "body is not valid JSON"),
    ],
)
def test_unparseable_bodies(body: bytes, reason: str) -> None:
    assert reason_for(body).startswith(reason)


def test_reason_is_short_and_does_not_echo_long_input() -> None:
    data = sample_payload()
    data["version"] = "9" * 10_000
    reason = reason_for(data)
    assert reason.startswith('version must be "4", got "999')
    assert len(reason) < 80


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


def assert_parses_or_explains(body: bytes) -> None:
    try:
        parse_payload(body)
    except PayloadError as exc:
        reason = exc.reason
    else:
        return
    assert reason
    assert "\n" not in reason


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_payload_error(body: bytes) -> None:
    assert_parses_or_explains(body)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(
        ["version", "status", "alerts", "groupKey", "truncatedAlerts", "commonLabels", "receiver"]
    ),
    st.sampled_from(
        ["status", "labels", "annotations", "startsAt", "endsAt", "fingerprint", "generatorURL"]
    ),
    json_values,
    st.booleans(),
)
def test_wrong_types_only_raise_payload_error(
    top: str, inner: str, value: Any, in_alert: bool
) -> None:
    data = sample_payload()
    if in_alert:
        data["alerts"][0][inner] = value
    else:
        data[top] = value
    assert_parses_or_explains(encode(data))


# -- properties over generated Alertmanager payloads (issue #17 part 3) ------------------------

# Any text Alertmanager may carry in a label: newlines, control characters, any script, long.
# (Long ones are repeated short ones: drawing 3,000 characters one by one is slow.)
label_text = st.text(max_size=30) | st.text(min_size=1, max_size=10).map(lambda t: t * 300)
label_maps = st.dictionaries(label_text, label_text, max_size=4)
moments = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
generated_alerts = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["firing", "resolved"]),
        "labels": label_maps,
        "annotations": label_maps,
        "startsAt": moments.map(lambda moment: moment.isoformat().replace("+00:00", "Z")),
        "endsAt": st.just("0001-01-01T00:00:00Z"),
        "generatorURL": st.text(max_size=40),
        "fingerprint": st.text(min_size=1, max_size=40),
    }
)
generated_payloads = st.fixed_dictionaries(
    {
        "version": st.just("4"),
        "status": st.sampled_from(["firing", "resolved"]),
        "alerts": st.lists(generated_alerts, max_size=4),
        "receiver": st.text(max_size=20),
        "groupKey": st.text(max_size=40),
        "truncatedAlerts": st.integers(0, 10**6),
        "groupLabels": label_maps,
        "commonLabels": label_maps,
        "commonAnnotations": label_maps,
        "externalURL": st.text(max_size=40),
    },
    optional={"extra": st.text(max_size=10)},  # unknown fields are ignored
)


@settings(max_examples=100, deadline=None)
@given(generated_payloads)
def test_every_valid_payload_parses_with_its_values(data: dict[str, Any]) -> None:
    payload = parse_payload(encode(data))
    assert payload.status == data["status"]
    assert payload.truncated_alerts == data["truncatedAlerts"]
    assert payload.common_labels == data["commonLabels"]
    assert len(payload.alerts) == len(data["alerts"])
    for alert, sent in zip(payload.alerts, data["alerts"], strict=True):
        assert alert.labels == sent["labels"]
        assert alert.fingerprint == sent["fingerprint"]
        assert alert.status == sent["status"]
        assert alert.starts_at.isoformat().replace("+00:00", "Z") == sent["startsAt"]


def break_one(data: dict[str, Any], where: str, value: Any) -> dict[str, Any]:
    """`data` with one required part made invalid: removed (value None) or replaced."""
    target = data["alerts"][0] if where.startswith("alert.") else data
    key = where.removeprefix("alert.")
    if value is None:
        del target[key]
    else:
        target[key] = value
    return data


invalid_payloads = st.builds(
    break_one,
    generated_payloads.filter(lambda data: bool(data["alerts"])),
    st.sampled_from(
        ["version", "status", "alerts", "alert.status", "alert.labels", "alert.startsAt",
         "alert.fingerprint"]
    ),
    st.none() | st.integers() | st.just("") | st.just({"\n" * 3: 1}) | st.just(["x" * 5_000]),
)  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(invalid_payloads)
def test_every_invalid_payload_gets_a_short_one_line_reason(data: dict[str, Any]) -> None:
    # None of the replacements is valid where it goes, so every one must be refused.
    reason = reason_for(encode(data))
    assert reason
    assert "\n" not in reason and "\r" not in reason
    assert len(reason) <= 300


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(label_text, st.integers() | st.none() | st.booleans(), min_size=1))
def test_a_wrong_label_value_names_its_key_cut_and_escaped(labels: dict[str, Any]) -> None:
    data = sample_payload()
    data["alerts"][0]["labels"] = labels
    reason = reason_for(data)
    assert reason.startswith("alerts[0].labels")
    assert "\n" not in reason and len(reason) <= 300

"""`_Exposition`: writes a registry byte for byte as prometheus_client's `generate_latest` of
either format (text 0.0.4 and OpenMetrics 1.0) does, in a fraction of the time (see the class).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, exposition
from prometheus_client.core import Exemplar, Metric
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.registry import Collector

_OPENMETRICS_CONTENT_TYPE: Final[str] = openmetrics_exposition.CONTENT_TYPE_LATEST
# Names the fast path writes as they are: what both of prometheus_client's formats leave
# unescaped (no colon: its OpenMetrics writer turns one into "_" in sample names).
_PLAIN_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TEXT_OM_SUFFIXES: Final = ("_created", "_gsum", "_gcount")
_MEMO_LIMIT: Final = 10_000  # families; far above the catalogue's, a bound and not a size


class _Unusual(Exception):
    """Something the fast path does not write itself; prometheus_client renders the scrape."""


_SPECIAL_FLOATS: Final = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}


def _go_float(value: float) -> str:
    """A sample value as `prometheus_client.utils.floatToGoString` writes it, in fewer steps:
    Python's shortest text, Go's exponent form for positive values from 1e7, and +Inf/-Inf/NaN.
    """
    if value == 0 and math.copysign(1.0, value) > 0:
        return "0.0"  # most samples: counters and buckets not yet reached
    text = repr(float(value))
    dot = text.find(".")
    if dot > 6 and text[0] != "-":  # seven digits before the point: positive and >= 1e6
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    if dot < 0:  # "1e+16" stays; only inf, -inf and nan have other names
        return _SPECIAL_FLOATS.get(text, text)
    return text


def _escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class _Collected(Collector):
    """Families already collected, for prometheus_client's own writers (the fallback)."""

    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics


class _Exposition:
    """Writes a registry byte for byte as prometheus_client's `generate_latest` of either
    format does, in a fraction of the time.

    The library escapes and validates every name and label of every sample at every scrape,
    which is most of the cost of `/metrics` (the series set is fixed, ~650 series). Here the
    `name{labels} ` text of each family's series and its HELP/TYPE lines are worked out once
    and kept, and reused while the family has the same series in the same order (checked at
    every scrape; else worked out again). Every value is read and formatted at each scrape. A
    family the fast path does not cover (names outside `_PLAIN_NAME`, native histograms) makes
    the library write that scrape, so the output never differs (tests compare the two).
    """

    def __init__(self) -> None:
        # family name -> ((sample name, labels) of each sample, their `name{labels} ` text)
        self._layouts: dict[str, tuple[list[tuple[str, dict[str, str]]], list[str]]] = {}
        self._text_headers: dict[tuple[str, str, str], tuple[str, dict[str, str]]] = {}
        self._om_headers: dict[tuple[str, str, str, str], str] = {}

    def text(self, registry: CollectorRegistry) -> bytes:
        """Prometheus text format 0.0.4, as `prometheus_client.generate_latest`."""
        metrics = list(registry.collect())
        try:
            return self._text(metrics).encode("utf-8")
        except _Unusual:
            return exposition.generate_latest(_Collected(metrics))

    def openmetrics(self, registry: CollectorRegistry) -> bytes:
        """OpenMetrics 1.0.0, as `prometheus_client.openmetrics.exposition.generate_latest`."""
        metrics = list(registry.collect())
        try:
            return self._openmetrics(metrics).encode("utf-8")
        except _Unusual:
            body: bytes = openmetrics_exposition.generate_latest(_Collected(metrics))  # type: ignore[no-untyped-call]
            return body

    def _text(self, metrics: list[Metric]) -> str:
        output: list[str] = []
        append = output.append
        go = _go_float
        for metric in metrics:
            header, moved = self._text_header(metric.name, metric.type, metric.documentation)
            append(header)
            extra: dict[str, list[str]] = {}
            for sample, prefix in zip(metric.samples, self._prefixes(metric), strict=True):
                name, _, value, timestamp, _, native_histogram = sample
                if native_histogram is not None:
                    raise _Unusual
                if timestamp is None:
                    line = f"{prefix}{go(value)}\n"
                else:
                    line = f"{prefix}{go(value)} {int(float(timestamp) * 1000):d}\n"
                if name in moved:
                    extra.setdefault(moved[name], []).append(line)
                else:
                    append(line)
            for suffix, lines in sorted(extra.items()):
                append(self._text_header(metric.name + suffix, "gauge", metric.documentation)[0])
                output.extend(lines)
        return "".join(output)

    def _openmetrics(self, metrics: list[Metric]) -> str:
        output: list[str] = []
        append = output.append
        go = _go_float
        for metric in metrics:
            append(self._om_header(metric.name, metric.type, metric.documentation, metric.unit))
            for sample, prefix in zip(metric.samples, self._prefixes(metric), strict=True):
                name, _, value, timestamp, exemplar, native_histogram = sample
                if native_histogram is not None:
                    raise _Unusual  # (the library leaves them out of OpenMetrics 1.0)
                line = prefix if value is None else prefix + go(value)
                if timestamp is not None:
                    line += f" {timestamp}"
                if exemplar:
                    line += _exemplar_text(metric, name, exemplar)
                append(line + "\n")
        append("# EOF\n")
        return "".join(output)

    def _prefixes(self, metric: Metric) -> list[str]:
        """The `name{labels} ` text of each sample of `metric` (both formats write it alike)."""
        samples = metric.samples
        layout = self._layouts.get(metric.name)
        if layout is not None and len(layout[0]) == len(samples):
            for sample, (name, labels) in zip(samples, layout[0], strict=True):
                if sample.name != name or sample.labels != labels:
                    break
            else:
                return layout[1]
        # First scrape of the family, or its series changed: work the text out again.
        series = [(sample.name, dict(sample.labels)) for sample in samples]
        prefixes = [_series_text(name, labels) for name, labels in series]
        if len(self._layouts) >= _MEMO_LIMIT:
            self._layouts.clear()
        self._layouts[metric.name] = (series, prefixes)
        return prefixes

    def _text_header(self, name: str, kind: str, documentation: str) -> tuple[str, dict[str, str]]:
        """The HELP/TYPE lines of a family in the text format, and the names of the samples the
        library moves to a gauge family of their own after it (name -> suffix)."""
        key = (name, kind, documentation)
        known = self._text_headers.get(key)
        if known is None:
            if _PLAIN_NAME.fullmatch(name) is None:
                raise _Unusual
            moved = {name + suffix: suffix for suffix in _TEXT_OM_SUFFIXES}
            # The library's renaming of OpenMetrics types to the text format's.
            if kind == "counter":
                name += "_total"
            elif kind == "info":
                name += "_info"
                kind = "gauge"
            elif kind == "stateset":
                kind = "gauge"
            elif kind == "gaugehistogram":
                kind = "histogram"
            elif kind == "unknown":
                kind = "untyped"
            doc = documentation.replace("\\", r"\\").replace("\n", r"\n")
            known = (f"# HELP {name} {doc}\n# TYPE {name} {kind}\n", moved)
            if len(self._text_headers) >= _MEMO_LIMIT:
                self._text_headers.clear()
            self._text_headers[key] = known
        return known

    def _om_header(self, name: str, kind: str, documentation: str, unit: str) -> str:
        key = (name, kind, documentation, unit)
        header = self._om_headers.get(key)
        if header is None:
            if _PLAIN_NAME.fullmatch(name) is None:
                raise _Unusual
            header = f"# HELP {name} {_escape_label_value(documentation)}\n# TYPE {name} {kind}\n"
            if unit:
                header += f"# UNIT {name} {unit}\n"
            if len(self._om_headers) >= _MEMO_LIMIT:
                self._om_headers.clear()
            self._om_headers[key] = header
        return header


def _series_text(name: str, labels: Mapping[str, str]) -> str:
    """`name{label="value",...} ` as both of the library's formats write a plain name."""
    if _PLAIN_NAME.fullmatch(name) is None:
        raise _Unusual
    if not labels:
        return f"{name} "
    pairs = []
    for label, text in sorted(labels.items()):
        if _PLAIN_NAME.fullmatch(label) is None:
            raise _Unusual
        pairs.append(f'{label}="{_escape_label_value(text)}"')
    return f"{name}{{{','.join(pairs)}}} "


def _exemplar_text(metric: Metric, sample_name: str, exemplar: Exemplar) -> str:
    """` # {labels} value [timestamp]` after an OpenMetrics sample, as the library writes it."""
    kind = metric.type
    if not (
        (kind == "counter" and sample_name.endswith("_total"))
        or (kind == "gaugehistogram" and sample_name.endswith("_bucket"))
        or (kind == "histogram" and (sample_name.endswith("_bucket") or sample_name == metric.name))
    ):
        # The library refuses the scrape; let it say so in its own words.
        raise _Unusual
    labels = ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in sorted(exemplar.labels.items()))
    text = f" # {{{labels}}} {_go_float(exemplar.value)}"
    if exemplar.timestamp is not None:
        text += f" {exemplar.timestamp}"
    return text

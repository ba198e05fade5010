"""Reading the services' metrics back: a /metrics page's samples as prometheus_client parses
them, by name and labels, with the histogram and window arithmetic that the launcher,
benchmarks and tests need; and the series names that dashboards and alert rules may query.

A sample is looked up as `get("a3c_worker_phase_seconds_total", phase="env")`, never by a
string that spells the labels out, so no caller has to know Prometheus's text format.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Samples:
    """Every sample of one scrape, keyed by (name, labels). Empty (and falsy) when the
    endpoint did not answer, so `scrape(port) or previous` keeps the last good page."""

    values: Mapping[tuple[str, Labels], float] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Samples:
        return cls(
            {
                (sample.name, frozenset(sample.labels.items())): float(sample.value)
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            }
        )

    def __len__(self) -> int:
        return len(self.values)

    def has(self, name: str, /, **labels: str) -> bool:
        return _key(name, labels) in self.values

    def get(self, name: str, /, **labels: str) -> float:
        """The sample with exactly these labels; 0 if there is none (a counter not yet
        counted: `has` tells the two apart)."""
        return self.values.get(_key(name, labels), 0.0)

    def total(self, name: str, /, **labels: str) -> float:
        """The sum over every sample of `name` carrying at least these labels (e.g. rejections
        over all reasons)."""
        wanted = labels.items()
        return sum(
            v for (n, ls), v in self.values.items() if n == name and wanted <= dict(ls).items()
        )

    def delta(self, before: Samples) -> Samples:
        """What the counters gained since `before` (a sample it lacks counts from 0): the
        window between two scrapes. Meaningless for gauges, which callers read directly."""
        return Samples({key: v - before.values.get(key, 0.0) for key, v in self.values.items()})

    def buckets(self, histogram: str, /, **labels: str) -> list[tuple[float, float]]:
        """(upper bound, cumulative count) of a histogram's buckets, sorted by bound."""
        found = []
        for (name, ls), value in self.values.items():
            bound = dict(ls)
            le = bound.pop("le", None)
            if name == f"{histogram}_bucket" and le is not None and bound == labels:
                found.append((float(le), value))
        return sorted(found)

    def quantile(self, histogram: str, q: float, /, **labels: str) -> float | None:
        return bucket_quantile(self.buckets(histogram, **labels), q)

    def mean(self, histogram: str, /, **labels: str) -> float | None:
        """The mean observation (sum / count); None before the first one."""
        count = self.values.get(_key(f"{histogram}_count", labels), 0.0)
        return self.values.get(_key(f"{histogram}_sum", labels), 0.0) / count if count else None


def _key(name: str, labels: Mapping[str, str]) -> tuple[str, Labels]:
    return name, frozenset(labels.items())


def bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The upper bound of the bucket holding quantile `q` (conservative: never understates).
    For integer observations and buckets 0, 1, 2, 4, ... this is exact up to 2."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    target = q * buckets[-1][1]
    for bound, count in buckets:
        if count >= target:
            return bound
    return buckets[-1][0]


def metrics_url(port: int, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{port}/metrics"


def scrape(target: int | str, timeout: float = 3.0) -> Samples:
    """The samples of a /metrics page (a port on 127.0.0.1, or a URL); empty when it does not
    answer."""
    url = metrics_url(target) if isinstance(target, int) else target
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            text = resp.read().decode()
    except OSError:
        return Samples()
    return Samples.parse(text)


METRIC_NAME = re.compile(r"\ba3c_[a-zA-Z0-9_]+")
"""A series of this project's, as a PromQL expression names it."""

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}


def metric_names(expr: str) -> set[str]:
    """The project's series an expression (PromQL) reads."""
    return set(METRIC_NAME.findall(expr))


def exposed_names() -> set[str]:
    """Every series name the services expose, from the registries in common.metrics (a
    labelled counter without children yet still counts)."""
    from common import metrics

    names = set()
    for factory in (metrics.learner_metrics, metrics.worker_metrics, metrics.evaluator_metrics):
        for family in factory().registry.collect():
            names |= {family.name + s for s in _SUFFIXES.get(family.type, ("",))}
    return names

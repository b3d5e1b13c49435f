"""
The gateway's Prometheus metrics.

L{Metrics} owns its registry (no process-global state, so tests and several
gateways in one process do not collide) and reads time from an injected
clock.  Services report through its methods; the API renders it.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Iterator, Mapping

from attrs import define, field
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from hoopgw.interfaces import IMetrics

#: The classic text format; every Prometheus server accepts it, and
#: L{generate_latest} writes exactly this.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Audit writes are a write(2) of one record: microseconds, not seconds.
AUDIT_WRITE_BUCKETS = (
    1e-6, 2.5e-6, 5e-6,
    1e-5, 2.5e-5, 5e-5,
    1e-4, 2.5e-4, 5e-4,
    1e-3, 2.5e-3, 5e-3,
    1e-2,
)  # fmt: skip

# Label values created up front so that rate() and absent() work before the
# first event: the installed front ends' kinds and their action families
# (hoopgw.frontends).  Other values appear when used.
_OUTCOMES = ("succeeded", "failed", "blocked", "expired")
_WILDCARDS = frozenset("*?[")
# Why a review webhook attempt failed (hoopgw.reviews.webhook).
WEBHOOK_FAILURE_REASONS = ("connection", "timeout", "server_error", "rate_limited", "refused")


def _label(value: Any) -> str:
    # A str-valued Enum (hoopgw.model.Status) prints as "Status.x" under
    # str() on Python 3.11; its value is the label.
    return str(getattr(value, "value", value))


@implementer(IMetrics)
@define
class Metrics:
    """
    Metrics of one gateway process.

    @param clock: provides L{IReactorTime}; C{seconds()} is compared with
        the last checkpoint's time at each scrape.
    """

    clock: IReactorTime
    #: The front ends whose labels exist from the start; the installed ones if C{None}.
    front_ends: Mapping[str, Any] | None = field(default=None, kw_only=True, repr=False)
    #: The C{Content-Type} of L{render}'s output.
    content_type: str = field(init=False, default=CONTENT_TYPE)
    registry: CollectorRegistry = field(init=False)
    _started: float = field(init=False)
    _last_checkpoint: float | None = field(init=False, default=None)
    _sessions_active: Gauge = field(init=False)
    _sessions_total: Counter = field(init=False)
    _actions: _PlainCounts = field(init=False)
    _masked: _PlainCounts = field(init=False)
    _auth_failures: Counter = field(init=False)
    _audit_failed: Gauge = field(init=False)
    _webhook_failures: Counter = field(init=False)
    _webhook_deliveries: Counter = field(init=False)
    # Children bound once: label lookup takes a lock and a dict walk, too
    # slow for the per-action hot path.
    _audit_writes: _AuditWrites = field(init=False)

    def __attrs_post_init__(self) -> None:
        registry = self.registry = CollectorRegistry(auto_describe=True)
        self._started = self.clock.seconds()
        self._sessions_active = Gauge(
            "hoopgw_sessions_active",
            "Sessions open now, by connection kind.",
            ["kind"],
            registry=registry,
        )
        self._sessions_total = Counter(
            "hoopgw_sessions_total",
            "Sessions asked for, by connection kind and result (opened or refused).",
            ["kind", "result"],
            registry=registry,
        )
        self._actions = _PlainCounts(
            "hoopgw_actions_total",
            "Actions finished, by kind family (the action kind before its first dot) and outcome.",
            ["kind", "outcome"],
        )
        registry.register(self._actions)
        self._masked = _PlainCounts(
            "hoopgw_masked_values_total",
            'Values masked, by mask (policy [[mask]] name) and what found them: a detector, a pattern or "column" (the origin).',
            ["mask", "detector"],
        )
        registry.register(self._masked)
        self._auth_failures = Counter(
            "hoopgw_auth_failures_total",
            "Refused credentials, by protocol.",
            ["protocol"],
            registry=registry,
        )
        self._audit_writes = _AuditWrites()
        registry.register(self._audit_writes)
        age = Gauge(
            "hoopgw_audit_checkpoint_age_seconds",
            "Seconds since the last signed checkpoint (since start-up before the first).",
            registry=registry,
        )
        age.set_function(self._checkpoint_age)
        self._audit_failed = Gauge(
            "hoopgw_audit_failed",
            "1 while the audit log cannot be written and traffic is refused, else 0.",
            registry=registry,
        )
        # Once per review and webhook at most: a prometheus_client Counter is cheap enough.
        self._webhook_failures = Counter(
            "hoopgw_review_webhook_failures_total",
            "Review webhook attempts that failed, by reason: connection, timeout, server_error (5xx), "
            "rate_limited (429) -- retried --, refused (any other answer but 2xx, not retried).",
            ["reason"],
            registry=registry,
        )
        self._webhook_deliveries = Counter(
            "hoopgw_review_webhook_deliveries_total",
            "Review notifications (one per review and webhook URL) by result: delivered (a 2xx answer) "
            "or failed (refused, or every attempt failed).",
            ["result"],
            registry=registry,
        )
        for reason in WEBHOOK_FAILURE_REASONS:
            self._webhook_failures.labels(reason)
        for result in ("delivered", "failed"):
            self._webhook_deliveries.labels(result)
        front_ends = self.front_ends
        if front_ends is None:
            from hoopgw.frontends import installed

            front_ends = installed()
        families = {"session"}
        for kind, front_end in front_ends.items():
            self._sessions_active.labels(kind)
            for result in ("opened", "refused"):
                self._sessions_total.labels(kind, result)
            self._auth_failures.labels(kind)
            families.update(pattern.partition(".")[0] for pattern in front_end.action_kinds)
        families = {family for family in families if not _WILDCARDS.intersection(family)}
        for family in sorted(families):
            for outcome in _OUTCOMES:
                self._actions.counts[family, outcome] = 0

    def _checkpoint_age(self) -> float:
        since = self._started if self._last_checkpoint is None else self._last_checkpoint
        return max(0.0, self.clock.seconds() - since)

    # -- reported by the audit log ---------------------------------------------

    def audit_written(self, seconds: float) -> None:
        """One record was written in C{seconds}."""
        writes = self._audit_writes
        writes.count += 1
        writes.sum += seconds
        writes.buckets[bisect_left(AUDIT_WRITE_BUCKETS, seconds)] += 1

    def checkpoint_written(self, unix_time: float) -> None:
        """A checkpoint was signed at C{unix_time} (the clock's time base)."""
        self._last_checkpoint = unix_time

    def audit_failed(self) -> None:
        """The audit log cannot be written (the gateway fails closed)."""
        self._audit_failed.set(1)

    def audit_recovered(self) -> None:
        """The audit log can be written again."""
        self._audit_failed.set(0)

    # -- reported by the session service -----------------------------------------

    def session_opened(self, kind: str) -> None:
        kind = _label(kind)
        self._sessions_total.labels(kind, "opened").inc()
        self._sessions_active.labels(kind).inc()

    def session_refused(self, kind: str) -> None:
        self._sessions_total.labels(_label(kind), "refused").inc()

    def session_closed(self, kind: str) -> None:
        self._sessions_active.labels(_label(kind)).dec()

    def action_finished(self, kind: str, outcome: str) -> None:
        """
        @param kind: an action kind (C{"sql.query"}); counted by its family
            (C{"sql"}).
        @param outcome: a L{hoopgw.model.Status} or its value.
        """
        counts = self._actions.counts
        key = (kind.partition(".")[0], _label(outcome))
        counts[key] = counts.get(key, 0) + 1

    def values_masked(self, mask: str, detector: str, count: int) -> None:
        """C{count} values masked by C{mask}, found by C{detector} (or C{"column"})."""
        counts = self._masked.counts
        key = (mask, detector)
        counts[key] = counts.get(key, 0) + count

    def auth_failed(self, protocol: str) -> None:
        self._auth_failures.labels(_label(protocol)).inc()

    # -- reported by the review webhooks -------------------------------------------

    def webhook_attempt_failed(self, reason: str) -> None:
        """One attempt to notify a webhook failed (C{reason}: one of L{WEBHOOK_FAILURE_REASONS})."""
        self._webhook_failures.labels(reason).inc()

    def webhook_delivered(self) -> None:
        self._webhook_deliveries.labels("delivered").inc()

    def webhook_given_up(self) -> None:
        """A notification was not delivered and will not be tried again."""
        self._webhook_deliveries.labels("failed").inc()

    # -- exposition ------------------------------------------------------------

    def render(self) -> bytes:
        """The metrics in the Prometheus text exposition format."""
        return generate_latest(_WithoutCreated(self.registry))


class _PlainCounts:
    """
    A counter family kept as plain numbers by label values, turned into
    samples at scrape time (a prometheus_client Counter takes a lock and a
    label lookup each time: too slow for once per action or masked value).
    Reported and scraped on the reactor thread.
    """

    def __init__(self, name: str, documentation: str, labels: list[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = labels
        self.counts: dict[tuple[str, ...], int] = {}

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in self.counts.items():
            family.add_metric(labels, value)
        yield family


class _AuditWrites:
    """
    C{hoopgw_audit_records_total} and C{hoopgw_audit_write_seconds}: two
    counts per record, kept as plain numbers and turned into samples at
    scrape time, because a prometheus_client Counter and Histogram take
    four locks per record.  Reported and scraped on the reactor thread.
    """

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0.0
        # Per bucket (le = AUDIT_WRITE_BUCKETS[i], then +Inf), not cumulative.
        self.buckets = [0] * (len(AUDIT_WRITE_BUCKETS) + 1)

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("hoopgw_audit_records_total", "Records appended to the audit log.", value=self.count)
        cumulative, running = [], 0
        for bound, n in zip((*AUDIT_WRITE_BUCKETS, float("inf")), self.buckets):
            running += n
            cumulative.append((floatToGoString(bound), running))
        yield HistogramMetricFamily(
            "hoopgw_audit_write_seconds",
            "Time to hand one audit record to the operating system.",
            buckets=cumulative,
            sum_value=self.sum,
        )


@define
class _WithoutCreated:
    """
    A registry's metrics less the C{*_created} samples prometheus_client adds
    to counters and histograms: they double the output, carry wall-clock
    time rather than the injected clock, and Prometheus ignores them in the
    text format anyway.
    """

    registry: CollectorRegistry

    def collect(self) -> Iterator[Metric]:
        for metric in self.registry.collect():
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric

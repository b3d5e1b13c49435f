"""
Tests for L{hoopgw.metrics}: the values a scrape shows after services
report, read back through Prometheus' own text parser.
"""

from __future__ import annotations

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.metrics import Metrics
from hoopgw.model import Status


def scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by sample name and sorted labels."""
    samples = {}
    for family in text_string_to_metric_families(metrics.render().decode("utf-8")):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return scrape(metrics)[name, tuple(sorted(labels.items()))]


class MetricsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.metrics = Metrics(self.clock)

    def test_sessions(self) -> None:
        """
        If sessions are opened, refused and closed, then the active gauge
        and the opened/refused counters follow, by connection kind.
        """
        self.metrics.session_opened("postgres")
        self.metrics.session_opened("postgres")
        self.metrics.session_opened("ssh")
        self.metrics.session_refused("postgres")
        self.metrics.session_closed("postgres")
        samples = scrape(self.metrics)
        self.assertEqual(samples["hoopgw_sessions_active", (("kind", "postgres"),)], 1)
        self.assertEqual(samples["hoopgw_sessions_active", (("kind", "ssh"),)], 1)
        self.assertEqual(samples["hoopgw_sessions_total", (("kind", "postgres"), ("result", "opened"))], 2)
        self.assertEqual(samples["hoopgw_sessions_total", (("kind", "postgres"), ("result", "refused"))], 1)
        self.assertEqual(samples["hoopgw_sessions_total", (("kind", "ssh"), ("result", "refused"))], 0)

    def test_actionsByFamily(self) -> None:
        """
        If actions finish, then they are counted by the part of their kind
        before the first dot, and by outcome (a Status or its value).
        """
        self.metrics.action_finished("sql.query", "succeeded")
        self.metrics.action_finished("sql.execute", Status.succeeded)
        self.metrics.action_finished("ssh.sftp.remove", "blocked")
        self.metrics.action_finished("k8s.delete", Status.expired)
        self.metrics.action_finished("session.open", "failed")
        self.metrics.action_finished("custom", "failed")
        self.assertEqual(value(self.metrics, "hoopgw_actions_total", kind="sql", outcome="succeeded"), 2)
        self.assertEqual(value(self.metrics, "hoopgw_actions_total", kind="ssh", outcome="blocked"), 1)
        self.assertEqual(value(self.metrics, "hoopgw_actions_total", kind="k8s", outcome="expired"), 1)
        self.assertEqual(value(self.metrics, "hoopgw_actions_total", kind="session", outcome="failed"), 1)
        self.assertEqual(value(self.metrics, "hoopgw_actions_total", kind="custom", outcome="failed"), 1)
        self.assertEqual(value(self.metrics, "hoopgw_actions_total", kind="http", outcome="succeeded"), 0)

    def test_authFailures(self) -> None:
        """If credentials are refused, then failures are counted by protocol."""
        self.metrics.auth_failed("ssh")
        self.metrics.auth_failed("ssh")
        self.assertEqual(value(self.metrics, "hoopgw_auth_failures_total", protocol="ssh"), 2)
        self.assertEqual(value(self.metrics, "hoopgw_auth_failures_total", protocol="postgres"), 0)

    def test_auditWrites(self) -> None:
        """
        If audit records are written, then they are counted and their write
        times land in microsecond-scale histogram buckets.
        """
        self.metrics.audit_written(2e-6)
        self.metrics.audit_written(40e-6)
        self.metrics.audit_written(0.5)
        self.assertEqual(value(self.metrics, "hoopgw_audit_records_total"), 3)
        self.assertEqual(value(self.metrics, "hoopgw_audit_write_seconds_bucket", le="1e-06"), 0)
        self.assertEqual(value(self.metrics, "hoopgw_audit_write_seconds_bucket", le="2.5e-06"), 1)
        self.assertEqual(value(self.metrics, "hoopgw_audit_write_seconds_bucket", le="5e-05"), 2)
        self.assertEqual(value(self.metrics, "hoopgw_audit_write_seconds_bucket", le="0.01"), 2)
        self.assertEqual(value(self.metrics, "hoopgw_audit_write_seconds_bucket", le="+Inf"), 3)
        self.assertEqual(value(self.metrics, "hoopgw_audit_write_seconds_count"), 3)

    def test_auditWritesAsPrometheusClientWould(self) -> None:
        """
        The audit write counts, kept as plain numbers, render exactly as a
        prometheus_client Counter and Histogram given the same writes,
        bucket bounds included.
        """
        from prometheus_client import CollectorRegistry, Counter, Histogram
        from prometheus_client.exposition import generate_latest

        from hoopgw.metrics import AUDIT_WRITE_BUCKETS

        registry = CollectorRegistry()
        records = Counter("hoopgw_audit_records_total", "Records appended to the audit log.", registry=registry)
        seconds = Histogram(
            "hoopgw_audit_write_seconds",
            "Time to hand one audit record to the operating system.",
            buckets=AUDIT_WRITE_BUCKETS,
            registry=registry,
        )
        for taken in (0.0, 1e-6, 2e-6, 2.5e-6, 40e-6, 1e-3, 0.01, 0.011, 0.5):
            self.metrics.audit_written(taken)
            records.inc()
            seconds.observe(taken)
        expected = b"".join(line + b"\n" for line in generate_latest(registry).splitlines() if b"_created" not in line)
        ours = self.metrics.render()
        self.assertIn(expected, ours)

    def test_checkpointAge(self) -> None:
        """
        The checkpoint age is the injected clock's time since the last
        checkpoint, computed at scrape time; before any checkpoint it is the
        time since the metrics were created.
        """
        self.clock.advance(30)
        self.assertEqual(value(self.metrics, "hoopgw_audit_checkpoint_age_seconds"), 30)
        self.metrics.checkpoint_written(self.clock.seconds() - 2)
        self.assertEqual(value(self.metrics, "hoopgw_audit_checkpoint_age_seconds"), 2)
        self.clock.advance(7.5)
        self.assertEqual(value(self.metrics, "hoopgw_audit_checkpoint_age_seconds"), 9.5)

    def test_auditFailed(self) -> None:
        """The audit-failed gauge is 0, 1 after audit_failed, 0 after audit_recovered."""
        self.assertEqual(value(self.metrics, "hoopgw_audit_failed"), 0)
        self.metrics.audit_failed()
        self.assertEqual(value(self.metrics, "hoopgw_audit_failed"), 1)
        self.metrics.audit_recovered()
        self.assertEqual(value(self.metrics, "hoopgw_audit_failed"), 0)

    def test_reviewWebhooks(self) -> None:
        """Failed webhook attempts by reason and notifications by result, every label at 0 before the first."""
        for reason in ("connection", "timeout", "server_error", "rate_limited", "refused"):
            self.assertEqual(value(self.metrics, "hoopgw_review_webhook_failures_total", reason=reason), 0)
        self.metrics.webhook_attempt_failed("server_error")
        self.metrics.webhook_attempt_failed("server_error")
        self.metrics.webhook_delivered()
        self.metrics.webhook_attempt_failed("refused")
        self.metrics.webhook_given_up()
        self.assertEqual(value(self.metrics, "hoopgw_review_webhook_failures_total", reason="server_error"), 2)
        self.assertEqual(value(self.metrics, "hoopgw_review_webhook_failures_total", reason="refused"), 1)
        self.assertEqual(value(self.metrics, "hoopgw_review_webhook_deliveries_total", result="delivered"), 1)
        self.assertEqual(value(self.metrics, "hoopgw_review_webhook_deliveries_total", result="failed"), 1)

    def test_ownRegistry(self) -> None:
        """
        Two Metrics do not share values, and neither registers in the
        process-global prometheus_client registry.
        """
        other = Metrics(self.clock)
        self.metrics.auth_failed("http")
        self.assertEqual(value(other, "hoopgw_auth_failures_total", protocol="http"), 0)
        self.assertIsNone(REGISTRY.get_sample_value("hoopgw_audit_records_total"))

    def test_noCreatedSamples(self) -> None:
        """The exposition has no wall-clock C{_created} samples."""
        self.metrics.session_opened("ssh")
        self.assertNotIn(b"_created", self.metrics.render())

    def test_contentType(self) -> None:
        """The content type is the Prometheus text format, version 0.0.4."""
        self.assertEqual(self.metrics.content_type, "text/plain; version=0.0.4; charset=utf-8")

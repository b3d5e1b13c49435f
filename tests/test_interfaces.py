"""
Tests for L{hoopgw.interfaces}: the pipeline's real classes and the
doubles of L{hoopgw.testing} provide the interfaces a front end is written
against, and the doubles provide them whole (no catch-all hiding a method
the real class lacks, or one it has).
"""

from __future__ import annotations

import inspect

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import Interface
from zope.interface.verify import verifyClass, verifyObject

from hoopgw.interfaces import (
    IActionHandle,
    IAuditLog,
    IIdentityVerifier,
    IMetrics,
    IPolicy,
    IRecorder,
    ISession,
    ISessionService,
    IStore,
)
from hoopgw.metrics import Metrics
from hoopgw.model import Action, Identity, Source
from hoopgw.sessions import ActionHandle, Session, SessionService
from hoopgw.testing import (
    MemoryAuditLog,
    MemoryIdentityVerifier,
    MemoryRecorder,
    MemoryStore,
    NullMetrics,
    StaticPolicy,
    memory_session_service,
)

ALICE = Identity(issuer="test", subject="alice")
SOURCE = Source("postgres", "127.0.0.1:50000")


def public_methods(cls: type) -> set[str]:
    """The names of C{cls}'s public methods (attrs' own and object's left out)."""
    return {
        name
        for name, value in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def methods(interface: type[Interface]) -> set[str]:
    return {name for name, description in interface.namesAndDescriptions(all=True) if callable(description)}


class PipelineTests(SynchronousTestCase):
    """The pipeline's own classes provide ISessionService, ISession and IActionHandle."""

    def setUp(self) -> None:
        self.service = memory_session_service(clock=Clock())

    def test_session_service(self) -> None:
        self.assertTrue(verifyClass(ISessionService, SessionService))
        self.assertTrue(verifyObject(ISessionService, self.service))

    def test_session(self) -> None:
        session = self.successResultOf(self.service.open(ALICE, "db", kind="postgres", source=SOURCE))
        self.assertIsInstance(session, Session)
        self.assertTrue(verifyObject(ISession, session))
        self.assertIn(session.id, self.service.active)

    def test_action_handle(self) -> None:
        session = self.successResultOf(self.service.open(ALICE, "db", kind="postgres", source=SOURCE))
        for handle in (
            self.successResultOf(session.check(Action(kind="sql.query", input="select 1"))),
            self.successResultOf(session.observe(Action(kind="ssh.shell.line", input="ls"))),
            self.successResultOf(session.refuse(Action(kind="sql.query", input="\\0"), "unreadable")),
        ):
            self.assertIsInstance(handle, ActionHandle)
            self.assertTrue(verifyObject(IActionHandle, handle))


class MetricsTests(SynchronousTestCase):
    def test_metrics(self) -> None:
        """The gateway's metrics provide IMetrics."""
        metrics = Metrics(Clock(), front_ends={})
        self.assertTrue(verifyObject(IMetrics, metrics))

    def test_contract_whole(self) -> None:
        """
        Every public method of the gateway's metrics is in IMetrics, so a
        service that reports through the interface reports to a double as
        it does to the real thing, and a double without a catch-all has
        them all.
        """
        self.assertEqual(public_methods(Metrics), methods(IMetrics))

    def test_null_metrics(self) -> None:
        """NullMetrics provides IMetrics, has exactly its methods, and keeps nothing."""
        metrics = NullMetrics()
        self.assertTrue(verifyObject(IMetrics, metrics))
        self.assertEqual(public_methods(NullMetrics), methods(IMetrics))
        self.assertIsNone(metrics.action_finished("sql.query", "succeeded"))
        self.assertEqual(metrics.render(), b"")
        self.assertRaises(AttributeError, getattr, metrics, "no_such_report")


class DoublesTests(SynchronousTestCase):
    """The doubles of hoopgw.testing provide the interfaces of what they stand in for."""

    def test_doubles(self) -> None:
        for interface, double in (
            (IAuditLog, MemoryAuditLog()),
            (IIdentityVerifier, MemoryIdentityVerifier()),
            (IPolicy, StaticPolicy()),
            (IRecorder, MemoryRecorder()),
            (IStore, MemoryStore()),
            (IMetrics, NullMetrics()),
        ):
            with self.subTest(interface.__name__):
                self.assertTrue(verifyObject(interface, double))
                self.assertTrue(interface.providedBy(double))

"""
L{SFTPFilter} with no channel: SFTP packets in, what the target and the
client receive out, against a real L{Session} over in-memory services.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from hoopgw.model import Action, Connection, Decision, Effect, Identity, Source
from hoopgw.protocols.ssh.channels import FilterOutput
from hoopgw.protocols.ssh.sftp import (
    Close,
    Handle,
    Init,
    Name,
    NameEntry,
    Open,
    OpenFlags,
    Read,
    Realpath,
    Remove,
    Sender,
    SFTPParser,
    Stat,
    Status,
    StatusCode,
    Version,
    Write,
    encode,
)
from hoopgw.protocols.ssh.sftp_filter import SFTPFilter
from hoopgw.testing import MemoryAuditLog, StaticPolicy, memory_session_service

ALICE = Identity(issuer="test", subject="alice", groups=("dev",))
WEB1 = Connection(name="web1", kind="ssh", target="127.0.0.1:22")
WRITE_FLAGS = OpenFlags.WRITE | OpenFlags.CREAT | OpenFlags.TRUNC


class SFTPFilterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.audit = MemoryAuditLog()
        self.policy = StaticPolicy()
        sessions = memory_session_service(connections=(WEB1,), audit=self.audit, policy=self.policy)
        self.session = self.successResultOf(sessions.open(ALICE, "web1", kind="ssh", source=Source("ssh", "127.0.0.1:4000")))
        subsystem = self.successResultOf(self.session.check(Action(kind="ssh.subsystem", input="sftp")))
        self.filter = SFTPFilter(self.session, subsystem)

    def client(self, *packets) -> FilterOutput:
        result = self.filter.client_data(b"".join(encode(p) for p in packets))
        if not isinstance(result, FilterOutput):
            result = self.successResultOf(result)
        return result

    def ends(self, kind: str) -> list[dict]:
        ids = {r["action"]["id"] for r in self.audit.of("action.start") if r["action"]["kind"] == kind}
        return [r["outcome"] for r in self.audit.of("action.end") if r["action"]["id"] in ids]

    def test_uploadAuditedOnce(self) -> None:
        """
        An OPEN is decided before it is forwarded; the WRITEs through its
        handle are forwarded without actions of their own, and the CLOSE's
        outcome counts the bytes the server acknowledged.
        """
        out = self.client(Init(), Open(1, "/tmp/f", WRITE_FLAGS))
        self.assertEqual(out.to_target, encode(Init()) + encode(Open(1, "/tmp/f", WRITE_FLAGS)))
        self.filter.target_data(encode(Version()) + encode(Handle(1, b"h")))
        writes = [Write.from_data(10 + i, b"h", i * 5, b"hello") for i in range(3)]
        out = self.client(*writes)
        self.assertEqual(out.to_target, b"".join(encode(w) for w in writes))
        self.filter.target_data(b"".join(encode(Status(10 + i, StatusCode.OK, "", "")) for i in range(3)))
        self.client(Close(20, b"h"))
        self.filter.target_data(encode(Status(20, StatusCode.OK, "", "")))
        kinds = [a.kind for a in self.policy.seen if a.kind.startswith("ssh.sftp.")]
        self.assertEqual(kinds, ["ssh.sftp.open", "ssh.sftp.close"])
        [close] = self.ends("ssh.sftp.close")
        self.assertEqual((close["status"], close["bytes_in"], close["bytes_out"]), ("succeeded", 15, 0))

    def test_laterPacketsWaitForDecision(self) -> None:
        """
        While an OPEN awaits its decision, nothing after it in the stream
        reaches the target; once allowed, both go in their order.
        """
        self.policy.hold = True
        result = self.filter.client_data(encode(Open(1, "/f", OpenFlags.READ)) + encode(Read(2, b"h", 0, 10)))
        self.assertNoResult(result)
        self.policy.release()
        out = self.successResultOf(result)
        self.assertEqual(out.to_target, encode(Open(1, "/f", OpenFlags.READ)) + encode(Read(2, b"h", 0, 10)))

    def test_refusedAnsweredByGateway(self) -> None:
        """
        A refused request is answered with PERMISSION_DENIED naming the
        rule and never reaches the target; the requests around it do.
        """
        self.policy.decisions["ssh.sftp.remove"] = Decision(effect=Effect.deny, rule="no-rm", message="no removing")
        out = self.client(Stat(2, "/a"), Remove(3, "/a"), Stat(4, "/b"))
        self.assertEqual(out.to_target, encode(Stat(2, "/a")) + encode(Stat(4, "/b")))
        [reply] = SFTPParser(Sender.server).feed(out.to_client)
        self.assertEqual((reply.request_id, reply.code), (3, StatusCode.PERMISSION_DENIED))
        self.assertIn("no-rm", reply.message)
        self.assertEqual(self.ends("ssh.sftp.remove")[0]["status"], "blocked")

    def test_closedFinishesPending(self) -> None:
        """Requests forwarded but never answered end as failed when the channel closes."""
        self.client(Open(1, "/f", OpenFlags.READ))
        self.filter.target_data(encode(Handle(1, b"h")))
        self.client(Close(2, b"h"))
        self.filter.closed()
        [close] = self.ends("ssh.sftp.close")
        self.assertEqual(close["status"], "failed")
        self.assertIn("closed", close["error"])

    def test_auditUnavailableRefuses(self) -> None:
        """With the audit log down, a request is refused, not forwarded."""
        self.audit.break_with("disk full")
        out = self.client(Open(1, "/f", OpenFlags.READ))
        self.assertEqual(out.to_target, b"")
        [reply] = SFTPParser(Sender.server).feed(out.to_client)
        self.assertEqual(reply.code, StatusCode.PERMISSION_DENIED)
        self.assertIn("audit log is unavailable", reply.message)

    def test_relativePathRefusedUntilHomeKnown(self) -> None:
        """
        Before the client has asked for its starting directory, a relative
        path has no absolute form a path rule could match, so it is refused
        (answered by the gateway, never forwarded); once REALPATH "." is
        answered, the same path is decided on its absolute form.
        """
        self.policy.decisions["ssh.sftp.open"] = Decision(effect=Effect.allow, rule="ok")
        out = self.client(Init(), Open(1, "../../etc/shadow", OpenFlags.READ))
        self.assertEqual(out.to_target, encode(Init()))
        [reply] = SFTPParser(Sender.server).feed(out.to_client)
        self.assertEqual((reply.request_id, reply.code), (1, StatusCode.PERMISSION_DENIED))
        self.assertIn("relative", reply.message)
        self.assertEqual(self.ends("ssh.sftp.open")[0]["status"], "blocked")

        out = self.client(Realpath(2, "."))
        self.assertEqual(out.to_target, encode(Realpath(2, ".")))
        self.filter.target_data(encode(Version()) + encode(Name(2, [NameEntry("/home/deploy")])))
        out = self.client(Open(3, "../../etc/shadow", OpenFlags.READ))
        self.assertEqual(out.to_target, encode(Open(3, "../../etc/shadow", OpenFlags.READ)))
        [action] = [a for a in self.policy.seen if a.kind == "ssh.sftp.open"][-1:]
        self.assertIn("/etc/shadow", action.attributes["ssh.sftp.paths"])

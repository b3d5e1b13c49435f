"""
Human approval inside a live psql session (issue 13): a statement a review
rule matches is held; psql is told the review's id at once; another
identity approves or denies it with the real `hoopgw reviews` CLI through
the gateway's API while psql waits; it expires; Ctrl-C withdraws it.
"""

from __future__ import annotations

import re

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread

from hoopgw.protocols.postgres import codec

from tests.integration._process import HOOPGW, child_env, run, spawn
from tests.integration.test_postgres_clients import RawClient, _GatewayCase, wait_until

REVIEWS = """
[[rule]]
name = "review-item-deletes"
effect = "review"
sql.writes = ["public.items"]
review.approvers = ["group:dba"]
review.timeout = "60s"
message = "deletes from items need a DBA"

[[rule]]
name = "review-scratch-quickly"
effect = "review"
sql.writes = ["public.scratch"]
review.approvers = ["group:dba"]
review.timeout = "2s"
"""


class ReviewTests(_GatewayCase):
    auto_deny = False

    def setUp(self) -> None:
        self.start(extra_policy=REVIEWS, api=True)
        self.cluster.psql("CREATE TABLE scratch (x int); GRANT ALL ON scratch TO app_scram;")
        # alice is in the approver group herself: she still may not approve her own request.
        self.token = self.gateway.identity.dev_issuer.issue("alice", ("dev", "dba"), 600)
        self.bob = self.gateway.identity.dev_issuer.issue("bob", ("dba",), 600)
        self.eve = self.gateway.identity.dev_issuer.issue("eve", ("dev",), 600)
        self.api = f"http://127.0.0.1:{self.gateway.listeners['api'].port.getHost().port}"

    def held(self, *statements: str):
        """psql running C{statements}; fires with (process, review id) once psql shows the notice."""
        argv = self.psql_argv(*[arg for sql in statements for arg in ("-c", sql)])
        proc = spawn(argv, marker=b"waits for review", env=self.env())
        return proc.ready.addCallback(lambda _: (proc, re.search(rb"waits for review (\w+)", proc.output).group(1).decode()))

    def reviews(self, token: str, *args: str):
        return run([*HOOPGW, "reviews", *args, "--api", self.api, "--token", token], env=child_env())

    @inlineCallbacks
    def test_approved_from_the_cli_while_psql_waits(self):
        proc, review = yield self.held("DELETE FROM items WHERE id = 1")
        self.assertIn(f"hoopgw reviews approve {review}".encode(), proc.output)
        code, output = yield self.reviews(self.token, "approve", review)
        self.assertEqual(code, 1)
        self.assertIn(b"never decides their own request", output)
        code, output = yield self.reviews(self.eve, "approve", review)
        self.assertEqual(code, 1)
        self.assertIn(b"not an approver", output)
        code, output = yield self.reviews(self.bob, "list", "--state", "pending", "--json")
        self.assertEqual(code, 0, output)
        self.assertIn(review.encode(), output)
        self.assertEqual(int(self.count("SELECT count(*) FROM items WHERE id = 1")), 1)  # not yet
        code, output = yield self.reviews(self.bob, "approve", review, "--reason", "INC-123")
        self.assertEqual(code, 0, output)
        code = yield proc.ended
        self.assertEqual(code, 0, proc.output)
        self.assertIn(b"DELETE 1", proc.output)
        self.assertEqual(int(self.count("SELECT count(*) FROM items WHERE id = 1")), 0)
        [approved] = self.records("review.approved")
        self.assertEqual((approved["review"]["decision"]["by"]["subject"], approved["review"]["decision"]["reason"]),
                         ("bob", "INC-123"))
        [(start, end)] = [a for a in self.actions("sql.query") if a[0]["action"]["input"].startswith("DELETE")]
        self.assertEqual((start["decision"]["review"], end["outcome"]["review"], end["outcome"]["status"]),
                         (review, review, "succeeded"))

    @inlineCallbacks
    def test_denied_with_the_reason_and_the_session_goes_on(self):
        proc, review = yield self.held("DELETE FROM items WHERE id = 2", "SELECT count(*) FROM items")
        code, output = yield self.reviews(self.bob, "deny", review, "--reason", "not during the freeze")
        self.assertEqual(code, 0, output)
        yield proc.ended
        self.assertIn(b"not during the freeze", proc.output)
        self.assertIn(b"\n100\n", proc.output)  # the next statement, same session
        self.assertEqual(int(self.count("SELECT count(*) FROM items WHERE id = 2")), 1)
        [(_, end)] = [a for a in self.actions("sql.query") if a[0]["action"]["input"].startswith("DELETE")]
        self.assertEqual(end["outcome"]["status"], "blocked")

    @inlineCallbacks
    def test_expires_and_never_runs(self):
        proc, review = yield self.held("INSERT INTO scratch VALUES (1)")
        yield proc.ended
        self.assertIn(b"expired", proc.output)
        self.assertEqual(int(self.count("SELECT count(*) FROM scratch")), 0)
        self.assertEqual(len(self.records("review.expired")), 1)
        code, output = yield self.reviews(self.bob, "approve", review)
        self.assertEqual(code, 1)
        self.assertIn(b"already expired", output)

    @inlineCallbacks
    def test_ctrl_c_withdraws_it(self):
        proc, review = yield self.held("DELETE FROM items WHERE id = 3")
        proc.signal("INT")
        yield proc.ended
        self.assertIn(b"cancelled", proc.output)
        self.assertEqual(int(self.count("SELECT count(*) FROM items WHERE id = 3")), 1)
        [cancelled] = self.records("review.cancelled")
        self.assertEqual(cancelled["review"]["id"], review)

    @inlineCallbacks
    def test_client_leaving_with_more_queued_cancels(self):
        """
        A client that pipelined more behind the held statement (a driver's
        Parse/Bind/Execute/Sync) and leaves: the request is cancelled, and
        an approval after that runs nothing.
        """

        def send_and_leave() -> None:
            client = RawClient(self.port, self.token)
            client.sock.sendall(b"".join(codec.encode(m) for m in (
                codec.Parse("", "DELETE FROM items WHERE id > $1", [23]),
                codec.Bind("", "", [0], [b"90"], [0]),
                codec.Execute("", 0),
                codec.Sync(),
                codec.Query("SELECT 1"),
            )))
            while b"waits for review" not in client.sock.recv(65536):
                pass
            client.close()

        yield deferToThread(send_and_leave)
        yield wait_until(lambda: self.records("review.cancelled"), "the review to be cancelled")
        [requested] = self.records("review.requested")
        # The approver saw the parameter as well as the text.
        self.assertIn("90", str(requested["review"]["action"]))
        code, output = yield self.reviews(self.bob, "approve", requested["review"]["id"])
        self.assertEqual(code, 1)
        self.assertIn(b"cancelled", output)
        self.assertEqual(int(self.count("SELECT count(*) FROM items WHERE id > 90")), 10)

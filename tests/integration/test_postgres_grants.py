"""
Just-in-time access (issue 13) with the real psql and the real `hoopgw
access` / `hoopgw reviews` CLI: a DELETE refused without a grant runs
inside an approved one, and a psql session that used the grant is ended
(FATAL) when the grant expires.
"""

from __future__ import annotations

import json
import re

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater

from hoopgw.model import Identity
from tests.integration._process import HOOPGW, child_env, run, spawn
from tests.integration.test_postgres_clients import _GatewayCase, running, wait_until

GRANTS = """
[[rule]]
name = "deletes-only-under-a-grant"
effect = "deny"
sql.statements = ["delete"]
grant = false
message = "deletes need an access grant (hoopgw access request)"

[[grant]]
name = "appdb-jit"
connections = ["appdb"]
groups = ["dev"]
max_duration = "1h"
review.approvers = ["group:dba"]
"""


class GrantTests(_GatewayCase):
    auto_deny = False

    def setUp(self) -> None:
        self.start(extra_policy=GRANTS, api=True)
        self.bob = self.gateway.identity.dev_issuer.issue("bob", ("dba",), 600)
        self.api = f"http://127.0.0.1:{self.gateway.listeners['api'].port.getHost().port}"

    def cli(self, token: str, *args: str):
        return run([*HOOPGW, *args, "--api", self.api, "--token", token], env=child_env())

    @inlineCallbacks
    def test_delete_refused_then_allowed_under_a_grant_and_the_session_ended_at_expiry(self):
        code, output = yield self.psql("-c", "DELETE FROM items WHERE id = 1")
        self.assertNotEqual(code, 0)
        self.assertIn(b"deletes need an access grant", output)
        self.assertEqual(int(self.count("SELECT count(*) FROM items WHERE id = 1")), 1)

        code, output = yield self.cli(self.token, "access", "request", "--connection", "appdb",
                                      "--duration", "2h", "--reason", "INC-9")
        self.assertEqual(code, 1)
        self.assertIn(b"at most 1h", output)
        code, output = yield self.cli(self.token, "access", "request", "--connection", "appdb",
                                      "--duration", "6s", "--reason", "INC-9: remove the duplicate")
        self.assertEqual(code, 0, output)
        review = re.search(rb"hoopgw reviews approve (\w+)", output).group(1).decode()
        code, output = yield self.cli(self.token, "reviews", "approve", review)
        self.assertEqual(code, 1)
        self.assertIn(b"never decides their own request", output)
        code, output = yield self.cli(self.bob, "reviews", "approve", review, "--reason", "ok for INC-9")
        self.assertEqual(code, 0, output)

        code, output = yield self.psql("-c", "DELETE FROM items WHERE id = 1")
        self.assertEqual(code, 0, output)
        self.assertIn(b"DELETE 1", output)
        self.assertEqual(int(self.count("SELECT count(*) FROM items WHERE id = 1")), 0)

        # A session that acts under the grant is ended with it.
        proc = spawn(self.psql_argv("-c", "SELECT pg_sleep(60)"), marker=None, env=self.env())
        yield wait_until(running(self.cluster, "SELECT pg_sleep(60)"), "pg_sleep to run on the target")
        code = yield proc.ended
        self.assertNotEqual(code, 0)
        self.assertIn(b"FATAL", proc.output)
        self.assertRegex(proc.output, rb"grant \w+ expired")

        code, output = yield self.psql("-c", "DELETE FROM items WHERE id = 2")
        self.assertNotEqual(code, 0)
        self.assertIn(b"deletes need an access grant", output)
        code, output = yield self.cli(self.bob, "access", "list", "--json")
        self.assertEqual(code, 0, output)
        [grant] = [json.loads(line) for line in output.splitlines()]
        self.assertEqual((grant["state"], grant["approval"]["by"]["subject"]), ("expired", "bob"))
        self.assertEqual(len(grant["sessions"]), 2)
        [expired] = self.records("grant.expired")
        ended = [r for r in self.records("session.end") if r["session"] in grant["sessions"]]
        self.assertEqual([r["end"]["status"] for r in ended].count("terminated"), 1)
        self.assertEqual(len(self.records("grant.used")), 2)
        self.assertEqual(expired["grant"]["id"], grant["id"])

    @inlineCallbacks
    def test_a_statement_running_when_the_grant_is_revoked_is_cancelled_on_the_target(self):
        """
        Closing the connection would not stop a statement the server is
        running: it is cancelled there, so a DELETE that was still sleeping
        never commits, and its outcome says it is unknown.
        """
        issuer = self.gateway.identity.dev_issuer.issuer
        bob = Identity(issuer, "bob", ("dba",))
        grant = yield self.gateway.grants.request(Identity(issuer, "alice", ("dev",)), "appdb", 600, "INC-10")
        yield self.gateway.reviews.approve(grant["review"], bob, "ok")
        statement = "DELETE FROM items WHERE id IN (SELECT 5 FROM pg_sleep(4))"
        proc = spawn(self.psql_argv("-c", statement), marker=None, env=self.env())
        yield wait_until(running(self.cluster, statement), "the DELETE to run on the target")
        yield self.gateway.grants.revoke(grant["id"], bob, "done")
        code = yield proc.ended
        self.assertNotEqual(code, 0)
        self.assertIn(b"was revoked by bob: done", proc.output)
        yield deferLater(reactor, 5, lambda: None)  # past the statement's sleep: it would have committed by now
        self.assertEqual(int(self.count("SELECT count(*) FROM items WHERE id = 5")), 1)
        [(_, end)] = [a for a in self.actions("sql.query") if a[0]["action"]["input"] == statement]
        self.assertEqual(end["outcome"]["status"], "failed")
        self.assertIn("outcome unknown", end["outcome"]["error"])

"""
Just-in-time access (issue 13) with the real psql and the real `hoopgw
access` / `hoopgw reviews` CLI: a DELETE refused without a grant runs
inside an approved one, and a psql session that used the grant is ended
(FATAL) when the grant expires.
"""

from __future__ import annotations

import json
import re

from twisted.internet.defer import inlineCallbacks

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
        self.assertEqual(sorted(r["end"]["status"] for r in ended), ["closed", "terminated"])
        self.assertEqual(len(self.records("grant.used")), 2)
        self.assertEqual(expired["grant"]["id"], grant["id"])

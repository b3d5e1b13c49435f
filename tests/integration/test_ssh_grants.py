"""
An SSH session that acts under a just-in-time access grant (issue 13) is
ended when the grant is revoked: the real ssh client reads why in the
gateway's disconnect message.
"""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks

from hoopgw.identity.ssh import SSH_KEY_ISSUER
from hoopgw.model import Identity
from tests.integration._process import spawn
from tests.integration._ssh import SSHGatewayCase

POLICY = """
[[rule]]
name = "everyone"
effect = "allow"
groups = ["*"]
connections = ["*"]
actions = ["*"]

[[rule]]
name = "commands-only-under-a-grant"
effect = "deny"
actions = ["ssh.exec"]
grant = false
message = "commands need an access grant"

[[grant]]
name = "web-jit"
connections = ["web1"]
review.approvers = ["group:ops"]
"""
ALICE = Identity(SSH_KEY_ISSUER, "alice", ("dev",))  # as her mapped key identifies her
BOB = Identity("test", "bob", ("ops",))


class GrantTests(SSHGatewayCase):
    policy = POLICY

    @inlineCallbacks
    def test_revocation_disconnects_with_the_reason(self):
        proc = spawn(self.ssh_argv("-n", "echo refused"), marker=None, env=self.env())
        code = yield proc.ended
        self.assertEqual(code, 1)
        self.assertIn(b"commands need an access grant", proc.output)

        grant = yield self.gateway.grants.request(ALICE, "web1", 600, "INC-4")
        yield self.gateway.reviews.approve(grant["review"], BOB, "ok")
        proc = spawn(self.ssh_argv("-n", "echo started; sleep 60"), marker=b"started", env=self.env())
        yield proc.ready
        yield self.gateway.grants.revoke(grant["id"], BOB, "incident over")
        code = yield proc.ended
        self.assertNotEqual(code, 0)
        self.assertIn(f"hoopgw: grant {grant['id']} was revoked by bob: incident over".encode(), proc.output)
        [end] = [r for r in self.records("session.end") if r["end"]["status"] == "terminated"]
        self.assertIn("revoked", end["end"]["error"])

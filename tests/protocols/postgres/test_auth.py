"""The gateway's SCRAM client to the target: limits on what a target may ask."""

from __future__ import annotations

import base64

from twisted.trial.unittest import SynchronousTestCase

from hoopgw.protocols.postgres.auth import MAX_SCRAM_ITERATIONS, BackendAuthError, ScramClient


class ScramIterationTests(SynchronousTestCase):
    def server_first(self, client: ScramClient, iterations: int) -> bytes:
        salt = base64.b64encode(b"0123456789abcdef").decode()
        return f"r={client.nonce}server,s={salt},i={iterations}".encode()

    def test_iterations_above_the_cap_are_refused(self) -> None:
        """
        If the target asks for more than 100,000 PBKDF2 iterations (it could
        stall the reactor), the exchange fails with an error naming the count
        and the limit, before any hashing.
        """
        self.assertEqual(MAX_SCRAM_ITERATIONS, 100_000)
        client = ScramClient(user="app", password="secret")
        client.first_message()
        with self.assertRaises(BackendAuthError) as caught:
            client.final_message(self.server_first(client, 10_000_000))
        self.assertIn("10000000", str(caught.exception))
        self.assertIn("1..100000", str(caught.exception))

    def test_iterations_at_the_cap_are_accepted(self) -> None:
        """PostgreSQL's default (4096) and the cap itself are accepted."""
        for iterations in (4096, MAX_SCRAM_ITERATIONS):
            client = ScramClient(user="app", password="secret")
            client.first_message()
            self.assertTrue(client.final_message(self.server_first(client, iterations)).startswith(b"c=biws,r="))

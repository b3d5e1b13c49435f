"""
The Redis front end attacked, with the effects checked on the real server:
spellings that smuggle a denied command (inline, mixed case, quoted escapes,
a renamed command), transactions bent out of shape, huge arguments, a
second login in one connection, another database, CLIENT KILL, MONITOR,
scripts and functions, RESET, a client that leaves mid-command, floods
before authentication, tokens in the clear, and the target's TLS.

The target here is a real redis-server with a password on its default user
and an ACL user "app" that the gateway logs in as: what runs on the target
runs as "app", never as the client.
"""

from __future__ import annotations

import datetime
import os
import socket
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from hoopgw.config import SecretRef

from hoopgw_redis.resp import Error, SimpleString, encode_command
from hoopgw_redis.settings import RedisSettings

from tests._gateway import RedisGateway, require_cli
from tests._redis import start_redis
from tests.test_frontend import RawClient, wait_until

PASSWORD_ENV = "HOOPGW_TEST_REDIS_APP"

POLICY = """
[[rule]]
name = "no-flushall"
effect = "deny"
redis.commands = ["FLUSHALL", "FLUSHDB", "DEBUG", "CONFIG|SET"]

[[rule]]
name = "no-session-keys"
effect = "deny"
redis.keys = ["session:*"]
"""


def acl_server(case: Any, *args: str) -> Any:
    server = start_redis(case, args=("--requirepass", "defaultpw", *args), password="defaultpw")
    with server.connect() as direct:
        direct.call(b"ACL", b"SETUSER", b"app", b"on", b">apppw", b"~*", b"&*", b"+@all")
    os.environ[PASSWORD_ENV] = "apppw"
    case.addCleanup(os.environ.pop, PASSWORD_ENV, None)
    return server


def app_settings(server: Any, **kwargs: Any) -> RedisSettings:
    kwargs.setdefault("tls", "disable")
    return RedisSettings(host=server.host, port=kwargs.pop("port", server.port), user="app",
                         password=SecretRef(env=PASSWORD_ENV), **kwargs)


class AttackTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.server = acl_server(self)
        self.gateway = yield RedisGateway(self, self.server, policy=POLICY,
                                          settings=app_settings(self.server)).listen()
        self.token = self.gateway.token("alice", ("dev",))
        with self.server.connect() as direct:
            direct.call(b"SET", b"session:1", b"s")
            direct.call(b"SET", b"app:1", b"a")

    def client(self) -> RawClient:
        client = RawClient(self.gateway.port)
        self.addCleanup(client.close)
        self.assertEqual(client.call(b"AUTH", b"cache", self.token), SimpleString(b"OK"))
        return client

    def still_there(self) -> None:
        with self.server.connect() as direct:
            self.assertEqual(direct.call(b"GET", b"session:1"), b"s")
            self.assertEqual(direct.call(b"GET", b"app:1"), b"a")

    @inlineCallbacks
    def test_spellings(self):
        """
        FLUSHALL inline, in mixed case, quoted with \\x escapes, and DEL of a
        protected key spelled the same ways: all refused; the data is intact.
        """
        def run():
            client = self.client()
            for line in (b"flushall\r\n", b"FlUsHaLl\n", b'"\\x46LUSHALL"\r\n', b"'flushdb'\r\n",
                         b'del "session:\\x31"\r\n', b"DEL app:2 session:1\r\n"):
                client.sock.sendall(line)
            replies = client.read(6)
            client.send((b"fLuShAlL",), (b"Del", b"session:1"))
            return replies + client.read(2)

        replies = yield deferToThread(run)
        for reply in replies:
            self.assertIsInstance(reply, Error)
            self.assertEqual(reply.code, b"NOPERM", reply)
        self.still_there()
        inline = [r for r in self.gateway.records("action.start") if r["action"].get("details", {}).get("inline")]
        self.assertEqual(len(inline), 6)
        self.assertEqual(inline[2]["action"]["kind"], "redis.flushall")

    @inlineCallbacks
    def test_transactions_bent(self):
        """
        Nested MULTI, EXEC without MULTI, DISCARD, WATCH: the target's own
        errors; a refused command in a nested MULTI still aborts; nothing ran.
        """
        def run():
            client = self.client()
            client.send((b"EXEC",), (b"MULTI",), (b"MULTI",), (b"SET", b"app:1", b"changed"),
                        (b"DEL", b"session:1"), (b"EXEC",), (b"EXEC",), (b"DISCARD",))
            return client.read(8)

        replies = yield deferToThread(run)
        self.assertEqual(replies[0], Error(b"ERR EXEC without MULTI"))
        self.assertEqual(replies[1], SimpleString(b"OK"))
        self.assertEqual(replies[2], Error(b"ERR MULTI calls can not be nested"))
        self.assertEqual(replies[3], SimpleString(b"QUEUED"))
        self.assertEqual(replies[4].code, b"NOPERM")
        self.assertEqual(replies[5].code, b"EXECABORT")
        self.assertEqual(replies[6], Error(b"ERR EXEC without MULTI"))
        self.assertEqual(replies[7], Error(b"ERR DISCARD without MULTI"))
        self.still_there()

    @inlineCallbacks
    def test_huge_arguments(self):
        """
        A 4 MiB value passes and is recorded as its length and digest; one
        over the codec's 16 MiB limit is a protocol error: the connection
        closes and nothing reaches the target.
        """
        def run():
            client = self.client()
            ok = client.call(b"SET", b"big", b"x" * (4 * 1024 * 1024))
            client.sock.sendall(b"*3\r\n$3\r\nSET\r\n$4\r\nhuge\r\n$%d\r\n" % (17 * 1024 * 1024))
            client.sock.sendall(b"y" * 65536)
            return ok, client.read(1)[0], client.closed()

        ok, refused, closed = yield deferToThread(run)
        self.assertEqual(ok, SimpleString(b"OK"))
        self.assertIn(b"Protocol error", refused.message)
        self.assertTrue(closed)
        with self.server.connect() as direct:
            self.assertEqual(direct.call(b"STRLEN", b"big"), 4 * 1024 * 1024)
            self.assertEqual(direct.call(b"EXISTS", b"huge"), 0)
        start = [r for r in self.gateway.records("action.start") if r["action"]["kind"] == "redis.set"][0]
        self.assertTrue(start["action"]["input"].startswith("SET big <4194304 bytes sha256:"))
        self.assertLess(len(json_size(start)), 4096)

    @inlineCallbacks
    def test_second_login_refused(self):
        """
        AUTH and HELLO ... AUTH after login are refused (as another
        connection, or with another identity's token); the session stays
        alice's; the passwords are not in the trail; the target never saw them.
        """
        bob = self.gateway.token("bob", ("dev",))

        def run():
            client = self.client()
            return (client.call(b"AUTH", b"cache", bob), client.call(b"HELLO", b"3", b"AUTH", b"other", bob),
                    client.call(b"AUTH", b"default", b"defaultpw"), client.call(b"ACL", b"WHOAMI"))

        first, second, third, whoami = yield deferToThread(run)
        for refused in (first, second, third):
            self.assertIn(b"already logged in", refused.message)
        self.assertEqual(whoami, b"app")
        text = (self.gateway.base / "audit" / "records.jsonl").read_text()
        self.assertNotIn(bob, text)
        self.assertNotIn("defaultpw", text)
        subjects = {r["identity"]["sub"] for r in self.gateway.records("action.start")}
        self.assertEqual(subjects, {"alice"})

    @inlineCallbacks
    def test_select_other_db(self):
        """SELECT 5 then SET: the key lands in db 5 on the target, and the record says db 5."""
        def run():
            client = self.client()
            return client.call(b"SELECT", b"5"), client.call(b"SET", b"in5", b"v")

        yield deferToThread(run)
        with self.server.connect() as direct:
            self.assertEqual(direct.call(b"EXISTS", b"in5"), 0)
            direct.call(b"SELECT", b"5")
            self.assertEqual(direct.call(b"GET", b"in5"), b"v")
        start = [r for r in self.gateway.records("action.start") if r["action"]["kind"] == "redis.set"][0]
        self.assertEqual(start["action"]["details"]["db"], 5)

    @inlineCallbacks
    def test_client_kill(self):
        """
        CLIENT KILL TYPE normal from one session ends the other sessions'
        target connections (and the catalog's): those clients are told and
        closed, their sessions end recorded; the killer's session goes on.
        """
        def run():
            victim = self.client()
            victim.call(b"GET", b"app:1")
            killer = self.client()
            killed = killer.call(b"CLIENT", b"KILL", b"TYPE", b"normal")
            told = victim.read(1)[0]
            return killed, told, victim.closed(), killer.call(b"GET", b"app:1")

        killed, told, closed, after = yield deferToThread(run)
        self.assertGreaterEqual(killed, 2)  # the victim's target connection and the catalog's
        self.assertIn(b"the target closed the connection", told.message)
        self.assertTrue(closed)
        self.assertEqual(after, b"a")  # the catalog reconnects on demand
        ends = yield deferToThread(wait_until, lambda: self.gateway.records("session.end"))
        self.assertEqual(ends[0]["end"]["status"], "target closed")

    @inlineCallbacks
    def test_monitor_and_replication_refused(self):
        """MONITOR, SYNC and CLIENT REPLY OFF are the gateway's refusals: nothing is sent to the target."""
        def run():
            client = self.client()
            return [client.call(*c) for c in ((b"MONITOR",), (b"SYNC",), (b"CLIENT", b"REPLY", b"OFF"))] + [
                client.call(b"PING")]

        replies = yield deferToThread(run)
        for reply in replies[:3]:
            self.assertIn(b"nothing was sent to the server", reply.message)
        self.assertEqual(replies[3], SimpleString(b"PONG"))
        with self.server.connect() as direct:
            self.assertNotIn(b"flags=O", direct.call(b"CLIENT", b"LIST"))
        refused = [r for r in self.gateway.records("action.start") if r["decision"].get("rule") == "hoopgw"]
        self.assertEqual(len(refused), 3)

    @inlineCallbacks
    def test_scripts_and_functions(self):
        """
        EVAL, EVALSHA and FCALL match every deny rule on commands and keys
        (the gateway cannot read a script): refused, the protected key is
        intact; SCRIPT LOAD and FUNCTION LOAD (which run nothing) pass.
        """
        library = b"#!lua name=lib\nredis.register_function('wipe', function(keys) return redis.call('del', 'session:1') end)"

        def run():
            client = self.client()
            sha = client.call(b"SCRIPT", b"LOAD", b"return redis.call('del', 'session:1')")
            return [
                client.call(b"EVAL", b"return redis.call('del', 'session:1')", b"0"),
                client.call(b"EVAL", b"return redis.call('del', KEYS[1])", b"1", b"app:1"),
                sha,
                client.call(b"EVALSHA", sha, b"0"),
                client.call(b"FUNCTION", b"LOAD", library),
                client.call(b"FCALL", b"wipe", b"0"),
            ]

        replies = yield deferToThread(run)
        self.assertEqual([type(r).__name__ for r in replies], ["Error", "Error", "bytes", "Error", "bytes", "Error"])
        self.assertIn(b"rule 'no-flushall'", replies[0].message)
        self.still_there()

    @inlineCallbacks
    def test_renamed_command(self):
        """
        A target whose FLUSHALL is renamed: the renamed name is still
        FLUSHALL to policy (the catalog asks the target), so it is refused.
        """
        server = acl_server(self, "--rename-command", "FLUSHALL", "zapall")
        gateway = yield RedisGateway(self, server, policy=POLICY, settings=app_settings(server)).listen()
        with server.connect() as direct:
            direct.call(b"SET", b"k", b"v")

        def run():
            client = RawClient(gateway.port)
            self.addCleanup(client.close)
            client.call(b"AUTH", b"cache", gateway.token())
            return client.call(b"zapall"), client.call(b"FLUSHALL")

        renamed, original = yield deferToThread(run)
        self.assertIn(b"rule 'no-flushall'", renamed.message)
        # The target's COMMAND INFO still answers for the old name: refused as well (it would do nothing).
        self.assertIn(b"rule 'no-flushall'", original.message)
        with server.connect() as direct:
            self.assertEqual(direct.call(b"GET", b"k"), b"v")
        start = [r for r in gateway.records("action.start") if r["action"]["details"].get("typed") == "zapall"][0]
        self.assertEqual(start["action"]["kind"], "redis.flushall")

    @inlineCallbacks
    def test_reset_keeps_the_target_login(self):
        """After RESET the target's connection is logged in again as "app" (not the default user)."""
        def run():
            client = self.client()
            client.call(b"SELECT", b"2")
            return client.call(b"RESET"), client.call(b"ACL", b"WHOAMI"), client.call(b"GET", b"app:1")

        reset, whoami, value = yield deferToThread(run)
        self.assertEqual(reset, SimpleString(b"RESET"))
        self.assertEqual(whoami, b"app")
        self.assertEqual(value, b"a")  # and back in the connection's database

    @inlineCallbacks
    def test_client_leaves_mid_command(self):
        """A client leaves during BLPOP: the target's blocked connection is closed, the outcome recorded."""
        def run():
            client = self.client()
            client.send((b"BLPOP", b"nothing", b"0"))
            with self.server.connect() as direct:
                wait_until(lambda: b"cmd=blpop" in direct.call(b"CLIENT", b"LIST"))
                client.close()
                wait_until(lambda: b"cmd=blpop" not in direct.call(b"CLIENT", b"LIST"))

        yield deferToThread(run)
        ends = yield deferToThread(wait_until, lambda: [
            r for r in self.gateway.records("action.end") if r["action"]["kind"] == "redis.blpop"])
        self.assertEqual(ends[0]["outcome"]["status"], "failed")
        self.assertIn("client left", ends[0]["outcome"]["error"])

    @inlineCallbacks
    def test_preauth_flood(self):
        """Junk before authentication: closed after 64 KiB; the target is never contacted."""
        def run():
            sock = socket.create_connection(("127.0.0.1", self.gateway.port), timeout=10)
            sent = 0
            try:
                while sent < 10 * 1024 * 1024:
                    sock.sendall(b"PING\r\n" * 1000)
                    sent += 6000
            except OSError:
                pass
            sock.close()
            return sent

        sent = yield deferToThread(run)
        self.assertLess(sent, 10 * 1024 * 1024)
        self.assertEqual(self.gateway.records("session.start"), [])


class DeadlineTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_login_deadline(self):
        """A client that does not log in within the deadline is told, and closed."""
        server = start_redis(self)
        gateway = yield RedisGateway(self, server, auth_timeout=0.5).listen()

        def run():
            client = RawClient(gateway.port)
            self.addCleanup(client.close)
            started = time.monotonic()
            (reply,) = client.read(1)
            return reply, client.closed(), time.monotonic() - started

        reply, closed, waited = yield deferToThread(run)
        self.assertIn(b"not logged in within 0.5 s", reply.message)
        self.assertTrue(closed)
        self.assertLess(waited, 5)


def json_size(record: dict[str, Any]) -> str:
    import json

    return json.dumps(record)


# -- TLS ------------------------------------------------------------------------


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (its own CA), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hoopgw redis test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TLSTests(TestCase):
    timeout = 60

    def setUp(self):
        self.dir = Path(self.mktemp()).resolve()  # absolute: redis-server runs in its own directory
        self.dir.mkdir()
        self.cert, self.key = make_certificate(self.dir)

    @inlineCallbacks
    def test_client_tls_and_plaintext_refused(self):
        """
        A TLS listener: redis-cli --tls logs in and works; on a plaintext
        listener (require_tls) the token is refused, and recorded.
        """
        require_cli()
        server = start_redis(self)
        gateway = RedisGateway(self, server, require_tls=True)
        endpoint = serverFromString(reactor, f"ssl:0:interface=127.0.0.1:privateKey={self.key}:certKey={self.cert}")
        yield gateway.listen(endpoint)
        result = yield deferToThread(gateway.cli, "SET", "tls", "yes", token=gateway.token(),
                                     extra=("--tls", "--cacert", str(self.cert)))
        self.assertEqual(result.stdout.strip(), "OK", result.stderr)
        with server.connect() as direct:
            self.assertEqual(direct.call(b"GET", b"tls"), b"yes")

        plain = yield RedisGateway(self, server, require_tls=True).listen()

        def run():
            client = RawClient(plain.port)
            self.addCleanup(client.close)
            return client.call(b"AUTH", b"cache", plain.token()), client.closed()

        refused, closed = yield deferToThread(run)
        self.assertIn(b"requires TLS", refused.message)
        self.assertTrue(closed)
        self.assertEqual(plain.records("auth.failed")[0]["reason"], "a token sent without TLS")

    @inlineCallbacks
    def test_target_tls_verify_full(self):
        """
        The target over TLS: verify-full with the right CA works; with
        another CA the gateway refuses to log in (no man in the middle), and
        the client is told why.
        """
        tls_port = free_port()
        server = acl_server(self, "--tls-port", str(tls_port), "--tls-cert-file", str(self.cert),
                            "--tls-key-file", str(self.key), "--tls-auth-clients", "no")
        good = yield RedisGateway(self, server, settings=app_settings(
            server, port=tls_port, tls="verify-full", ca_file=self.cert)).listen()

        def run(gateway):
            client = RawClient(gateway.port)
            self.addCleanup(client.close)
            login = client.call(b"AUTH", b"cache", gateway.token())
            if isinstance(login, Error):
                return login, None
            return login, client.call(b"ACL", b"WHOAMI")

        login, whoami = yield deferToThread(run, good)
        self.assertEqual((login, whoami), (SimpleString(b"OK"), b"app"))

        other = Path(self.mktemp()).resolve()
        other.mkdir()
        other_cert, _ = make_certificate(other)
        bad = yield RedisGateway(self, server, settings=app_settings(
            server, port=tls_port, tls="verify-full", ca_file=other_cert)).listen()
        login, _ = yield deferToThread(run, bad)
        self.assertIn(b"cannot connect to the target", login.message)
        ends = bad.records("session.end")
        self.assertEqual(ends[0]["end"]["status"], "failed")
        self.assertIn("TLS", ends[0]["end"]["error"])

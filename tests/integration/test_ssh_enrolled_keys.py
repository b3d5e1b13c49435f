"""
SSH keys enrolled with a token, end to end: `hoopgw ssh-key` (the real CLI,
its token cache written as `hoopgw login` writes it) enrols this machine's
key through the API listener, then the real OpenSSH `ssh` logs in with it
through the gateway to a real sshd, as the token's identity.  And the
attacks: someone else's key, a statically mapped key, an expired
enrolment, garbage, the audit log down, the bounds.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import stat
import time
from pathlib import Path
from urllib.parse import quote

from cryptography.hazmat.primitives.asymmetric import dsa, ed25519
from twisted.conch.ssh.keys import Key
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from hoopgw.cli import login
from hoopgw.errors import AuditUnavailable
from hoopgw.identity.enrolled import ENROLLED_METHOD, EXPIRED, sign_proof
from hoopgw.identity.ssh import openssh_fingerprint
from tests.integration._process import HOOPGW, child_env, run, run_split
from tests.integration._ssh import SSH, SSHGatewayCase, new_key, public_line, require

SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"

POLICY = """
[[rule]]
name = "dev-may-use-web1"
effect = "allow"
groups = ["dev"]
connections = ["web1"]
"""


class _EnrolCase(SSHGatewayCase):
    timeout = 120
    with_api = True
    policy = POLICY

    @inlineCallbacks
    def setUp(self):
        yield super().setUp()
        self.home = self.base / "home"
        self.home.mkdir()
        self.dev = self.gateway.identity.dev_issuer
        self.enrolled = self.gateway.identity.enrolled_keys

    # -- helpers --------------------------------------------------------------------

    def cache_token(self, token: str, ttl: int = 600) -> Path:
        """Write the token cache as `hoopgw login` does (folder 0700, file 0600)."""
        folder = self.home / "hoopgw" / "credentials"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = folder / login._file_name(self.api_url)
        path.write_text(json.dumps({
            "gateway": self.api_url, "issuer": self.dev.issuer, "client_id": "hoopgw-cli",
            "token_endpoint": f"{self.api_url}/none", "access_token": token, "refresh_token": None,
            "expires_at": int(time.time()) + ttl,
        }))
        path.chmod(0o600)
        return path

    def hoopgw(self, *args: str):
        return run_split([*HOOPGW, *args], env=child_env(XDG_CONFIG_HOME=str(self.home), HOOPGW_GATEWAY=""))

    def api(self, method: str, path: str, token: str | None, body=None, raw: bytes | None = None):
        """One call to the API listener from a thread (the client blocks; the gateway runs here)."""
        if raw is not None:
            import urllib.request

            def send():
                request = urllib.request.Request(self.api_url + path, data=raw, method=method,
                                                 headers={"Authorization": f"Bearer {token}",
                                                          "Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        return response.status, json.loads(response.read())
                except urllib.error.HTTPError as e:
                    return e.code, json.loads(e.read() or b"null")

            return deferToThread(send)
        return deferToThread(login.call, self.api_url + path, body=body, token=token, method=method)

    def enrol(self, token: str, key: Key, signature: str | None = None):
        """POST the key with its holder's proof (the token signed with it), or C{signature} instead."""
        proof = sign_proof(key, token) if signature is None else signature
        return self.api("POST", "/api/v1/ssh-keys", token, {"public_key": public_line(key) + " test", "signature": proof})

    def key(self, name: str) -> tuple[Key, str]:
        return new_key(self.base / name), name

    @inlineCallbacks
    def ssh_as(self, key_name: str, command: str = "echo hi"):
        code, output = yield self.ssh(command, key=key_name)
        return code, output

    def starts(self):
        return self.records("session.start")



class EnrolledKeyTests(_EnrolCase):
    # -- the path a person takes ------------------------------------------------------

    @inlineCallbacks
    def test_login_then_plain_ssh(self):
        """
        After a login (the token cache), `hoopgw ssh-key` makes a 0600 key
        beside the cache and enrols it; plain ssh -i with it runs a command
        as the token's subject, groups and issuer, the session recording
        the enrolled-key method and the key's fingerprint.  Running it
        again renews the enrolment; --forget removes it at the gateway and
        here, and the key no longer logs in.
        """
        token = self.dev.issue("carol", ("dev",), 600)
        self.cache_token(token)
        code, out, err = yield self.hoopgw("ssh-key", "--gateway", self.api_url)
        self.assertEqual(code, 0, err)
        path = Path(out.decode().strip())
        self.assertEqual(path, self.home / "hoopgw" / "credentials" / "127.0.0.1_{}.ssh".format(self.api_url.rsplit(":", 1)[1]))
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        self.assertIn(b"enrolled at", err)
        self.assertIn(b"as carol", err)

        code, output = yield self.ssh_as(str(path))
        self.assertEqual((code, output.strip().splitlines()[-1:]), (0, [b"hi"]), output)
        yield self.watch.wait("session.end")
        [start] = self.starts()
        fingerprint = openssh_fingerprint(Key.fromFile(str(path)).public().blob())
        self.assertEqual(
            (start["identity"]["iss"], start["identity"]["sub"], start["identity"]["groups"],
             start["identity"]["method"], start["identity"]["token_id"]),
            (self.dev.issuer, "carol", ["dev"], ENROLLED_METHOD, fingerprint),
        )
        [enrolled] = self.records("identity.ssh_key.enrolled")
        self.assertEqual((enrolled["key"]["fingerprint"], enrolled["key"]["type"], enrolled["identity"]["sub"]),
                         (fingerprint, "ssh-ed25519", "carol"))
        self.assertEqual(enrolled["identity"]["credential_sha256"], hashlib.sha256(token.encode()).hexdigest())
        self.assertNotIn(token, json.dumps(enrolled))
        self.assertFalse(enrolled["renews"])

        # The next use enrols it again (the same key), with the current token.
        code, out, err = yield self.hoopgw("ssh-key", "--gateway", self.api_url)
        self.assertEqual((code, Path(out.decode().strip())), (0, path), err)
        self.assertTrue(self.records("identity.ssh_key.enrolled")[-1]["renews"])

        kept = self.base / "forgotten"
        kept.write_bytes(path.read_bytes())
        kept.chmod(0o600)
        code, out, err = yield self.hoopgw("ssh-key", "--gateway", self.api_url, "--forget")
        self.assertEqual(code, 0, err)
        self.assertFalse(path.exists())
        [removed] = self.records("identity.ssh_key.removed")
        self.assertEqual((removed["key"]["fingerprint"], removed["identity"]["sub"]), (fingerprint, "carol"))
        self.assertEqual(len(self.enrolled), 0)
        code, output = yield self.ssh_as("forgotten")
        self.assertEqual(code, 255, output)
        yield self.watch.wait("auth.failed")
        [failed] = self.records("auth.failed")
        self.assertEqual((failed["reason"], failed["key_fingerprint"]),
                         ("public key not mapped to an identity", fingerprint))

    @inlineCallbacks
    def test_bare_ssh_with_match_exec(self):
        """
        With the ~/.ssh/config of docs/identity.md, a bare `ssh web1@gw
        CMD` after login enrols the key itself (Match exec) and runs as the
        token's subject; a second one renews it.
        """
        self.cache_token(self.dev.issue("frank", ("dev",), 600))
        wrapper = self.base / "bin" / "hoopgw"
        wrapper.parent.mkdir()
        wrapper.write_text("#!/bin/sh\nexec " + " ".join(f"'{a}'" for a in HOOPGW) + ' "$@"\n')
        wrapper.chmod(0o755)
        # The path hoopgw ssh-key prints, under this test's XDG_CONFIG_HOME.
        path = self.home / "hoopgw" / "credentials" / (Path(login._file_name(self.api_url)).stem + ".ssh")
        config = self.base / "ssh_config"
        config.write_text(f"""
Host gw
    HostName 127.0.0.1
    Port {self.port}
    IdentitiesOnly yes
    IdentityFile {path}
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    BatchMode yes
Match originalhost gw exec "hoopgw --quiet ssh-key --gateway {self.api_url} >/dev/null"
""")
        env = child_env(XDG_CONFIG_HOME=str(self.home), HOME=str(self.base),
                        PATH=f"{wrapper.parent}:{child_env().get('PATH', '')}", SHELL="/bin/sh")
        for _ in range(2):
            code, output = yield run([SSH, "-F", str(config), "-n", "web1@gw", "echo bare"], env=env)
            self.assertEqual((code, output.strip().splitlines()[-1:]), (0, [b"bare"]), output)
        self.assertNotIn(b"enrolled at", output)
        yield self.watch.wait("session.end", 2)
        self.assertEqual([(s["identity"]["sub"], s["identity"]["method"]) for s in self.starts()],
                         [("frank", ENROLLED_METHOD)] * 2)
        self.assertEqual([r["renews"] for r in self.records("identity.ssh_key.enrolled")], [False, True])

    @inlineCallbacks
    def test_ssh_keygen_proof(self):
        """
        Without the CLI: an ECDSA key and its proof made by ssh-keygen -Y
        sign enrol over plain HTTP, and the key logs in.
        """
        require(SSH_KEYGEN)
        token = self.dev.issue("ellen", ("dev",), 600)
        path = self.base / "ecdsa"
        code, output = yield run([SSH_KEYGEN, "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-f", str(path)], env=self.env())
        self.assertEqual(code, 0, output)
        (self.base / "token").write_text(token)
        code, output = yield run(["/bin/sh", "-c", f"{SSH_KEYGEN} -Y sign -n hoopgw-ssh-key -O hashalg=sha256 "
                                  f"-f {path} < {self.base / 'token'} > {self.base / 'token.sig'}"], env=self.env())
        self.assertEqual(code, 0, output)
        body = {"public_key": Path(f"{path}.pub").read_text(), "signature": (self.base / "token.sig").read_text()}
        code, answer = yield self.api("POST", "/api/v1/ssh-keys", token, body)
        self.assertEqual((code, answer.get("subject")), (201, "ellen"), answer)
        code, output = yield self.ssh_as("ecdsa")
        self.assertEqual((code, output.strip().splitlines()[-1:]), (0, [b"hi"]), output)

    @inlineCallbacks
    def test_cli_refusals(self):
        """
        Not logged in, or a key file others can read: `hoopgw ssh-key`
        says so and enrols nothing.
        """
        code, out, err = yield self.hoopgw("ssh-key", "--gateway", self.api_url)
        self.assertEqual(code, 1)
        self.assertIn(b"not logged in", err)
        self.cache_token(self.dev.issue("carol", ("dev",), 600))
        code, out, err = yield self.hoopgw("ssh-key", "--gateway", self.api_url)
        self.assertEqual(code, 0, err)
        path = Path(out.decode().strip())
        path.chmod(0o644)
        code, out, err = yield self.hoopgw("ssh-key", "--gateway", self.api_url)
        self.assertEqual(code, 1)
        self.assertIn(b"readable by others", err)
        self.assertEqual(len(self.records("identity.ssh_key.enrolled")), 1)

    @inlineCallbacks
    def test_groups_decide(self):
        """The enrolled key carries the token's groups: policy refuses a group it does not allow."""
        key, name = self.key("ops_key")
        code, body = yield self.enrol(self.dev.issue("olga", ("ops",), 600), key)
        self.assertEqual(code, 201, body)
        code, output = yield self.ssh_as(name)
        self.assertEqual(code, 255, output)
        self.assertIn(b"session refused", output)
        yield self.watch.wait("session.refused")
        [refused] = self.records("session.refused")
        self.assertEqual((refused["identity"]["sub"], refused["identity"]["method"]), ("olga", ENROLLED_METHOD))

    # -- attacks --------------------------------------------------------------------

    @inlineCallbacks
    def test_expired_enrolment(self):
        """
        A key enrolled with a short-lived token stops working when the
        token expires: ssh is refused as with an unknown key, and the
        auth.failed record says the enrolment expired.  The expired token
        itself cannot enrol again.
        """
        key, name = self.key("short")
        token = self.dev.issue("erin", ("dev",), 3)
        code, body = yield self.enrol(token, key)
        self.assertEqual(code, 201, body)
        self.assertLessEqual(body["expires"], int(time.time()) + 3)
        code, output = yield self.ssh_as(name)
        self.assertEqual(code, 0, output)
        yield deferLater(reactor, max(0.0, body["expires"] - time.time()) + 0.2, lambda: None)
        code, output = yield self.ssh_as(name)
        self.assertEqual(code, 255, output)
        self.assertIn(b"Permission denied", output)
        yield self.watch.wait("auth.failed")
        [failed] = self.records("auth.failed")
        self.assertEqual((failed["reason"], failed["key_fingerprint"], failed["method"]),
                         (EXPIRED, openssh_fingerprint(key.public().blob()), "publickey"))
        self.assertEqual(len(self.starts()), 1)
        code, body = yield self.enrol(token, key)
        self.assertEqual(code, 401, body)

    @inlineCallbacks
    def test_someone_elses_key(self):
        """
        Mallory cannot enrol bob's public key as hers: not before him (she
        cannot sign with it, nor replay his proof), nor after (409, even
        holding a copy of the private key); she cannot remove it (404).
        Nor can anyone enrol alice's statically mapped key.  Bob's key
        still logs in as bob, alice's as alice.
        """
        key, name = self.key("bob_key")
        bob, mallory = self.dev.issue("bob", ("dev",), 600), self.dev.issue("mallory", ("dev",), 600)
        own = Key(ed25519.Ed25519PrivateKey.generate())
        for signature, expected in [
            ("", "signature: required"),
            (sign_proof(own, mallory), "another key"),
            (sign_proof(key, bob), "does not verify"),  # bob's proof, replayed
        ]:
            code, body = yield self.enrol(mallory, key, signature)
            self.assertEqual(code, 400, body)
            self.assertIn(expected, body["error"])
        code, body = yield self.enrol(bob, key)
        self.assertEqual(code, 201, body)
        fingerprint = body["fingerprint"]
        code, body = yield self.enrol(mallory, key)
        self.assertEqual(code, 409, body)
        self.assertNotIn("bob", body["error"])
        code, body = yield self.api("DELETE", "/api/v1/ssh-keys/" + quote(fingerprint, safe=""), mallory)
        self.assertEqual(code, 404, body)
        alice = Key.fromFile(str(self.base / "alice"))
        code, body = yield self.enrol(mallory, alice, sign_proof(own, mallory))
        self.assertEqual(code, 400, body)
        code, body = yield self.enrol(mallory, alice)
        self.assertEqual(code, 409, body)
        self.assertIn("[[identity.ssh_keys]]", body["error"])

        code, output = yield self.ssh_as(name)
        self.assertEqual(code, 0, output)
        code, output = yield self.ssh_as("alice")
        self.assertEqual(code, 0, output)
        yield self.watch.wait("session.end", 2)
        self.assertEqual(sorted((s["identity"]["sub"], s["identity"]["method"]) for s in self.starts()),
                         [("alice", "publickey"), ("bob", ENROLLED_METHOD)])
        self.assertEqual(len(self.records("identity.ssh_key.enrolled")), 1)

        # Bob logs out: only then is the key free, and it no longer logs in.
        code, body = yield self.api("DELETE", "/api/v1/ssh-keys/" + quote(fingerprint, safe=""), bob)
        self.assertEqual((code, body.get("removed")), (200, True), body)
        code, output = yield self.ssh_as(name)
        self.assertEqual(code, 255, output)

    @inlineCallbacks
    def test_garbage(self):
        """Garbage key data, refused key types, a private key, huge or malformed bodies: 400, nothing enrolled."""
        token = self.dev.issue("gary", ("dev",), 600)
        dsa_key = Key(dsa.generate_private_key(1024))
        ed = Key(ed25519.Ed25519PrivateKey.generate())
        for public_key, expected in [
            ("ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x05short").decode(),
             "not a valid public key"),
            (public_line(dsa_key), "not accepted"),
            (ed.toString("openssh").decode(), "private key"),
            ("ssh-ed25519 " + base64.b64encode(ed.public().blob() + b"\x00").decode(), "the key data is not"),
            (12345, "required"),
        ]:
            code, body = yield self.api("POST", "/api/v1/ssh-keys", token, {"public_key": public_key})
            self.assertEqual(code, 400, (public_key, body))
            self.assertIn(expected, body["error"])
        code, body = yield self.api("POST", "/api/v1/ssh-keys", token, raw=b'{"public_key": "' + b"A" * 100_000 + b'"}')
        self.assertEqual(code, 400, body)
        self.assertIn("over", body["error"])
        code, body = yield self.api("POST", "/api/v1/ssh-keys", "not-a-token", {"public_key": public_line(ed)})
        self.assertEqual(code, 401, body)
        self.assertEqual(len(self.enrolled), 0)
        self.assertEqual(self.records("identity.ssh_key.enrolled"), [])

    @inlineCallbacks
    def test_log_down(self):
        """With the audit log down, an enrolment is refused with 503 and the key does not log in."""
        key, name = self.key("late")
        self.gateway.audit._fail("test: the disk went away")
        code, body = yield self.enrol(self.dev.issue("dana", ("dev",), 600), key)
        self.assertEqual(code, 503, body)
        self.assertIn("nothing was done", body["error"])
        self.assertEqual(len(self.enrolled), 0)
        code, output = yield self.ssh_as(name)
        self.assertEqual(code, 255, output)
        self.flushLoggedErrors(AuditUnavailable)

    @inlineCallbacks
    def test_bounds(self):
        """A subject's key beyond the per-subject cap displaces its oldest, which stops logging in."""
        self.enrolled.per_subject = 1
        token = self.dev.issue("dave", ("dev",), 600)
        (first, first_name), (second, second_name) = self.key("first"), self.key("second")
        for key in (first, second):
            code, body = yield self.enrol(token, key)
            self.assertEqual(code, 201, body)
        self.assertEqual(self.records("identity.ssh_key.enrolled")[-1]["displaces"],
                         [openssh_fingerprint(first.public().blob())])
        code, output = yield self.ssh_as(first_name)
        self.assertEqual(code, 255, output)
        code, output = yield self.ssh_as(second_name)
        self.assertEqual(code, 0, output)
        self.enrolled.total = 1
        code, body = yield self.enrol(self.dev.issue("zed", ("dev",), 600), Key(ed25519.Ed25519PrivateKey.generate()))
        self.assertEqual(code, 503, body)
        self.assertIn("maximum of 1", body["error"])



class WrapperTests(_EnrolCase):
    """`hoopgw ssh` and `hoopgw config ssh` (issue 15): the stock ssh, set up from the discovery document."""

    @inlineCallbacks
    def test_hoopgw_ssh(self):
        """
        hoopgw ssh runs the real ssh on the connection with the enrolled key
        and the gateway's host key pinned (published at /.well-known/hoopgw);
        ssh's own options and the command pass through.
        """
        self.cache_token(self.dev.issue("carol", ("dev",), 600))
        code, out, err = yield self.hoopgw("ssh", "--gateway", self.api_url, "web1", "-o", "BatchMode=yes",
                                           "echo", "wrapped")
        self.assertEqual((code, out.strip()), (0, b"wrapped"), err)
        yield self.watch.wait("session.end")
        [start] = self.starts()
        self.assertEqual((start["identity"]["sub"], start["identity"]["method"]), ("carol", ENROLLED_METHOD))
        known = self.home / "hoopgw" / "credentials" / ("127.0.0.1_{}.known_hosts".format(self.api_url.rsplit(":", 1)[1]))
        host_key = self.gateway.listeners["ssh"].factory.host_key.public().toString("openssh").decode()
        self.assertEqual(known.read_text().split(" ", 1)[1].strip(), host_key)

        # Another host key for that alias (a gateway impersonated): ssh refuses before it authenticates.
        other = new_key(self.base / "impostor").public().toString("openssh").decode()
        known.write_text(known.read_text().split(" ", 1)[0] + " " + other + "\n")
        known.chmod(0o600)
        argv = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={known}", "-o", f"HostKeyAlias={known.read_text().split(' ', 1)[0]}",
                "-p", str(self.port), "web1@127.0.0.1", "true"]
        code, output = yield run(argv, env=child_env())
        self.assertEqual(code, 255)
        self.assertIn(b"Host key verification failed", output)

    @inlineCallbacks
    def test_config_ssh(self):
        """
        hoopgw config ssh writes a Host per SSH connection policy lets the
        user open, at the top of the file (a Host * below cannot change the
        User), keeps the rest, replaces itself on a second run; then plain
        ssh and sftp with that file log in with the key its Match exec
        enrolled, with no token typed.
        """
        self.cache_token(self.dev.issue("carol", ("dev",), 600))
        config = self.home / "ssh_config"
        config.write_text("Host *\n    User mallory\n    ServerAliveInterval 30\n")
        for _ in range(2):
            code, out, err = yield self.hoopgw("config", "ssh", "--gateway", self.api_url, "--file", str(config))
            self.assertEqual(code, 0, err)
        text = config.read_text()
        self.assertEqual(text.count("# BEGIN hoopgw"), 1)
        self.assertTrue(text.startswith(f"# BEGIN hoopgw {self.api_url}\n"), text)
        self.assertTrue(text.endswith("Host *\n    User mallory\n    ServerAliveInterval 30\n"), text)
        self.assertIn("Host hoopgw-web1\n", text)
        self.assertIn(b"ssh hoopgw-web1", err)

        code, output = yield run([SSH, "-F", str(config), "-o", "BatchMode=yes", "hoopgw-web1", "echo", "plain"],
                                 env=child_env(XDG_CONFIG_HOME=str(self.home), HOOPGW_GATEWAY=""))
        self.assertEqual((code, output.strip().splitlines()[-1:]), (0, [b"plain"]), output)
        yield self.watch.wait("session.end")
        [start] = self.starts()
        self.assertEqual((start["identity"]["sub"], start["connection"]), ("carol", "web1"))

    @inlineCallbacks
    def test_config_ssh_no_connection(self):
        """Someone policy lets open no SSH connection is told so; nothing is written."""
        self.cache_token(self.dev.issue("dave", ("ops",), 600))
        config = self.home / "ssh_config"
        code, out, err = yield self.hoopgw("config", "ssh", "--gateway", self.api_url, "--file", str(config))
        self.assertEqual(code, 1)
        self.assertIn(b"lets you open no SSH connection", err)
        self.assertFalse(config.exists())

"""
The SSH front end with the real thing on both sides: an OpenSSH C{sshd}
started by the test (its own host key, loopback only, the gateway's target
key authorised), the gateway in-process, and the real C{ssh} client.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from twisted.conch.ssh.keys import Key
from twisted.internet.defer import inlineCallbacks

from hoopgw.audit.search import search
from hoopgw.identity.ssh import openssh_fingerprint
from tests.integration._process import run, spawn, start_tripwire
from tests.integration._ssh import SFTP, SSH_AGENT, SSHGatewayCase, public_line, require


class SSHProxyTests(SSHGatewayCase):
    @inlineCallbacks
    def test_exec_exit_code(self):
        """
        A command run through the gateway with alice's key reaches the target
        with the connection's key; stdout, stderr and the exit status come
        back unchanged, and the trail holds the command, its exit code and
        the session's byte counts.
        """
        code, output = yield self.ssh("echo out; echo err >&2; exit 3")
        self.assertEqual(code, 3, output)
        self.assertIn(b"out\n", output)
        self.assertIn(b"err\n", output)
        yield self.watch.wait("session.end")
        [(start, end)] = self.actions("ssh.exec")
        self.assertEqual(start["action"]["input"], "echo out; echo err >&2; exit 3")
        self.assertEqual(start["identity"]["sub"], "alice")
        self.assertEqual(start["identity"]["method"], "publickey")
        self.assertEqual(start["connection"], "web1")
        self.assertEqual(end["outcome"]["status"], "failed")
        self.assertEqual(end["outcome"]["code"], "3")
        [session_end] = self.records("session.end")
        self.assertEqual(session_end["end"]["exit_status"], 3)
        self.assertEqual(session_end["end"]["bytes_out"], len(b"out\nerr\n"))

    @inlineCallbacks
    def test_stdin_piped(self):
        """
        C{echo hi | ssh web1@gateway cat}: stdin reaches the command, its
        EOF ends it, the output comes back and the exit status is 0.
        """
        proc = spawn(
            self.ssh_argv("cat"), marker=None, env={"PATH": os.environ.get("PATH", ""), "HOME": str(self.base)}
        )
        proc.transport.write(b"hi\nthere\n")
        proc.transport.closeStdin()
        code = yield proc.ended
        self.assertEqual(code, 0, proc.output)
        # After OpenSSH's "Permanently added" notice on stderr.
        self.assertTrue(proc.output.endswith(b"\nhi\nthere\n"), proc.output)
        yield self.watch.wait("session.end")
        [(_, end)] = self.actions("ssh.exec")
        self.assertEqual((end["outcome"]["status"], end["outcome"]["code"]), ("succeeded", "0"))
        self.assertEqual(end["outcome"]["bytes_in"], 9)

    @inlineCallbacks
    def test_tty(self):
        """
        C{ssh -tt}: the command runs on a terminal on the target and its
        exit status comes back.
        """
        code, output = yield self.ssh("-tt", "tty; exit 5")
        self.assertEqual(code, 5, output)
        self.assertIn(b"/dev/pts/", output)

    @inlineCallbacks
    def test_shell(self):
        """
        C{ssh -tt} with no command: an interactive shell on the target (an
        C{ssh.shell} action) runs what is typed, and its exit status ends
        the client and the action.
        """
        proc = spawn(
            self.ssh_argv("-tt", ""),
            marker=None,
            env={"PATH": os.environ.get("PATH", ""), "HOME": str(self.base), "TERM": "xterm"},
        )
        proc.transport.write(b"echo $((6*7))\nexit 4\n")
        code = yield proc.ended
        self.assertEqual(code, 4, proc.output)
        self.assertIn(b"42\r\n", proc.output)
        yield self.watch.wait("session.end")
        [(start, end)] = self.actions("ssh.shell")
        self.assertEqual(end["outcome"]["code"], "4")
        self.assertEqual(start["action"]["details"]["pty"]["term"], "xterm")

    @inlineCallbacks
    def test_sftp_relayed(self):
        """
        The sftp subsystem is relayed (an C{ssh.subsystem} action): a batch
        of sftp commands runs against the target's sftp-server.
        """
        require(SFTP)
        (self.base / "remote.txt").write_text("payload")
        (self.base / "batch").write_text(f"get {self.base / 'remote.txt'} {self.base / 'local.txt'}\n")
        argv = self.ssh_argv()[:-1]  # options without the destination
        argv = [SFTP, *[a for a in argv[1:] if a != "-p" and a != str(self.port)], "-P", str(self.port),
                "-b", str(self.base / "batch"), "web1@127.0.0.1"]
        code, output = yield run(argv, env={"PATH": os.environ.get("PATH", ""), "HOME": str(self.base)})
        self.assertEqual(code, 0, output)
        self.assertEqual((self.base / "local.txt").read_text(), "payload")
        yield self.watch.wait("session.end")
        [(start, end)] = self.actions("ssh.subsystem")
        self.assertEqual(start["action"]["input"], "sftp")
        self.assertEqual(end["outcome"]["status"], "succeeded")

    @inlineCallbacks
    def test_denied_rm(self):
        """
        C{rm  -rf} spelled with extra spaces and quotes is still recognised
        by the default policy's C{no-rm-rf} rule: it never reaches the
        target (the file is still there), the client reads the rule's name
        on stderr and exit status 1, and the action is audited as blocked.
        """
        victim = self.base / "victim"
        victim.mkdir()
        (victim / "file").write_text("keep me")
        command = f"'rm'  -rf   {victim}"
        code, output = yield self.ssh(command)
        self.assertEqual(code, 1, output)
        self.assertIn(b"no-rm-rf", output)
        self.assertTrue((victim / "file").exists())
        yield self.watch.wait("session.end")
        [(start, end)] = self.actions("ssh.exec")
        self.assertEqual(start["action"]["attributes"]["ssh.commands"], [f"rm -rf {victim}", f"rm -f -r {victim}"])
        self.assertEqual(start["decision"], {"effect": "deny", "rule": "no-rm-rf", "message": start["decision"]["message"]})
        self.assertEqual(end["outcome"]["status"], "blocked")

    @inlineCallbacks
    def test_denied_rm_evasions(self):
        """
        The default policy's C{no-rm-rf} also holds when the removal hides
        behind a newline, C{sh -c}, a substitution, an assignment, a shell
        keyword, C{env}/C{command} or a full path: the real shell on the
        target never runs it.
        """
        victim = self.base / "victim"
        victim.mkdir()
        (victim / "file").write_text("keep me")
        evasions = [
            f"true\nrm -rf {victim}",
            f"sh -c 'rm -rf {victim}'",
            f"echo $(rm -rf {victim})",
            f"echo `rm -rf {victim}`",
            f"x=1 rm -rf {victim}",
            f"if true; then rm -rf {victim}; fi",
            f"env /bin/rm -fr {victim}",
            f"command rm {victim} -Rf",
        ]
        for command in evasions:
            code, output = yield self.ssh(command)
            self.assertEqual(code, 1, (command, output))
            self.assertIn(b"no-rm-rf", output, command)
            self.assertTrue((victim / "file").exists(), command)
        code, output = yield self.ssh(f"ls {victim}")
        self.assertEqual(code, 0, output)
        self.assertTrue(output.endswith(b"file\n"), output)

    @inlineCallbacks
    def test_wrong_target_host_key(self):
        """
        A target whose host key is not the pinned one is refused: the client
        is told why, and the session's end record names both fingerprints.
        """
        from twisted.logger import formatEvent, globalLogPublisher

        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        code, output = yield self.ssh("true", user="impostor")
        self.assertEqual(code, 255, output)
        self.assertIn(b"not the pinned key", output)
        # One line for the operator, no traceback.
        lines = [formatEvent(e) for e in events if "cannot connect to the target" in (e.get("log_format") or "")]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("(impostor): cannot connect to the target:", lines[0])
        self.assertEqual([e for e in events if "log_failure" in e], [])
        yield self.watch.wait("session.end")
        [end] = self.records("session.end")
        self.assertEqual(end["end"]["status"], "failed")
        self.assertEqual(
            end["end"]["target_host_key"], {"expected": [self.expected_fp], "presented": self.presented_fp}
        )
        self.assertEqual(self.actions("ssh.exec"), [])

    @inlineCallbacks
    def test_agent_forwarding_refused(self):
        """
        C{ssh -A}: the agent request is refused and audited as blocked, and
        the command still runs.
        """
        # A short path: the trial folder is too deep for a Unix socket's name.
        folder = Path(tempfile.mkdtemp(prefix="hoopgw-agent-"))
        self.addCleanup(shutil.rmtree, folder, True)
        agent_sock = folder / "agent.sock"
        require(SSH_AGENT)
        agent = spawn([SSH_AGENT, "-D", "-a", str(agent_sock)], marker=b"SSH_AUTH_SOCK")
        self.addCleanup(lambda: (agent.signal("TERM"), agent.ended)[1])
        yield agent.ready
        code, output = yield self.ssh("-A", "echo ok", env={"SSH_AUTH_SOCK": str(agent_sock)})
        self.assertEqual((code, output.splitlines()[-1]), (0, b"ok"), output)
        yield self.watch.wait("session.end")
        [(start, end)] = self.actions("ssh.agent")
        self.assertEqual(end["outcome"]["status"], "blocked")

    @inlineCallbacks
    def test_forward_denied(self):
        """
        C{ssh -W} (a direct-tcpip channel, as C{-L} opens) is refused by the
        default policy's C{no-port-forwarding} rule, named to the client.
        """
        code, output = yield self.ssh("-W", f"127.0.0.1:{self.sshd_port}", "")
        self.assertNotEqual(code, 0)
        self.assertIn(b"administratively prohibited", output)
        self.assertIn(b"no-port-forwarding", output)
        yield self.watch.wait("session.end")
        [(start, end)] = self.actions("ssh.forward")
        self.assertEqual(start["action"]["attributes"]["ssh.forward.destinations"], [f"127.0.0.1:{self.sshd_port}"])
        self.assertEqual(end["outcome"]["status"], "blocked")

    def _askpass(self, token: str) -> dict[str, str]:
        script = self.base / "askpass"
        (self.base / "token").write_text(token)
        script.write_text(f"#!/bin/sh\ncat {self.base / 'token'}\n")
        script.chmod(0o700)
        return {"SSH_ASKPASS": str(script), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}

    @inlineCallbacks
    def test_token_keyboard_interactive(self):
        """
        A token typed as the keyboard-interactive answer logs in as the
        token's subject; the trail never holds the token.
        """
        token = self.gateway.identity.dev_issuer.issue("bob", ("dev",), 600)
        code, output = yield self.ssh(
            "-o", "PreferredAuthentications=keyboard-interactive", "whoami >/dev/null; echo kbd",
            batch=False, env=self._askpass(token),
        )
        self.assertEqual((code, output.strip().splitlines()[-1]), (0, b"kbd"), output)
        yield self.watch.wait("session.end")
        [start] = self.records("session.start")
        self.assertEqual(start["identity"]["sub"], "bob")
        log = b"".join(p.read_bytes() for p in (self.base / "data" / "audit").rglob("*") if p.is_file())
        self.assertNotIn(token.encode(), log)

    @inlineCallbacks
    def test_token_password(self):
        """A token as the SSH password logs in; a bad one is refused and audited."""
        token = self.gateway.identity.dev_issuer.issue("carol", ("dev",), 600)
        code, output = yield self.ssh(
            "-o", "PreferredAuthentications=password", "-o", "NumberOfPasswordPrompts=1", "echo pw",
            batch=False, env=self._askpass(token),
        )
        self.assertEqual((code, output.strip().splitlines()[-1]), (0, b"pw"), output)
        code, output = yield self.ssh(
            "-o", "PreferredAuthentications=password", "-o", "NumberOfPasswordPrompts=1", "echo pw",
            batch=False, env=self._askpass("not-a-token"),
        )
        self.assertEqual(code, 255, output)
        yield self.watch.wait("auth.failed")
        [failed] = self.records("auth.failed")
        self.assertEqual((failed["method"], failed["user"]), ("token", "web1"))
        self.assertNotIn("credential_sha256", failed)  # not a token's shape: perhaps a password

    @inlineCallbacks
    def test_unknown_key(self):
        """
        A key that maps to no identity is refused, and recorded once with
        its fingerprint (not once per OpenSSH query).
        """
        code, output = yield self.ssh("true", key="stranger")
        self.assertEqual(code, 255, output)
        yield self.watch.wait("auth.failed")
        [failed] = self.records("auth.failed")
        stranger = Key.fromFile(str(self.base / "stranger.pub"))
        self.assertEqual(failed["key_fingerprint"], openssh_fingerprint(stranger.blob()))
        self.assertEqual(failed["method"], "publickey")

    @inlineCallbacks
    def test_unknown_connection(self):
        """
        An SSH user name that names no connection: the client is told, and
        the refusal is audited as session.refused.
        """
        code, output = yield self.ssh("true", user="nosuch")
        self.assertEqual(code, 255, output)
        self.assertIn(b"no connection named 'nosuch'", output)
        yield self.watch.wait("session.refused")
        [refused] = self.records("session.refused")
        self.assertEqual(refused["connection"], "nosuch")


class WrongKindTests(SSHGatewayCase):
    """
    An SSH user name that names a connection of another kind: the client
    reads why, as for any refused session; one session.refused record; the
    target never reached.  Whom policy does not let open it learns nothing
    of its kind.
    """

    policy = """
[[rule]]
name = "everyone"
effect = "allow"
[[rule]]
name = "no-secrets"
effect = "deny"
connections = ["secret-*"]
actions = ["session.open"]
"""

    def extra_config_text(self) -> str:
        port, self.tripwire = start_tripwire(self)
        return f"""
[[connections]]
name = "appdb"
kind = "postgres"
address = "127.0.0.1:{port}"
database = "app"
user = "app"
tls = "disable"
[[connections]]
name = "api"
kind = "http"
upstream = "http://127.0.0.1:{port}"
[[connections]]
name = "secret-db"
kind = "postgres"
address = "127.0.0.1:{port}"
database = "app"
user = "app"
tls = "disable"
[[connections]]
name = "secret-web"
kind = "ssh"
address = "127.0.0.1:{port}"
user = "deploy"
key_file = "target_key"
host_key = "{public_line(Key.fromFile(str(self.base / "target_key.pub")))}"
"""

    @inlineCallbacks
    def setUp(self):
        yield super().setUp()
        self.before = len(list(search(self.base / "data" / "audit")))
        self.addCleanup(lambda: self.assertEqual((self.tripwire.peers, self.tripwire.received), ([], b"")))

    def written(self) -> list[dict]:
        return list(search(self.base / "data" / "audit"))[self.before:]

    @inlineCallbacks
    def test_postgres_connection(self):
        """
        ssh appdb@gateway (a PostgreSQL connection): exit status 255, and
        ssh prints "session refused" naming both kinds; the one record is
        session.refused, decided by the gateway itself (not auth.failed:
        the client did authenticate).
        """
        code, output = yield self.ssh("true", user="appdb")
        self.assertEqual(code, 255, output)
        message = 'connection "appdb" is of kind postgres, not ssh'
        self.assertIn(f"hoopgw: session refused: {message}".encode(), output)
        yield self.watch.wait("session.refused")
        [record] = self.written()
        self.assertEqual(record["event"], "session.refused")
        self.assertEqual(
            (record["connection"], record["protocol"], record["identity"]["sub"], record["client"]["user"]),
            ("appdb", "ssh", "alice", "appdb"),
        )
        self.assertEqual(record["decision"], {"effect": "deny", "rule": "hoopgw", "message": message})
        self.assertEqual(record["outcome"], {"status": "blocked", "error": message})

    @inlineCallbacks
    def test_http_connection(self):
        """ssh api@gateway (an HTTP connection): the same, naming http."""
        code, output = yield self.ssh("true", user="api")
        self.assertEqual(code, 255, output)
        self.assertIn(b'hoopgw: session refused: connection "api" is of kind http, not ssh', output)
        yield self.watch.wait("session.refused")
        self.assertEqual([r["event"] for r in self.written()], ["session.refused"])

    @inlineCallbacks
    def test_forbidden_connection_of_another_kind(self):
        """
        If policy does not let the client open it, the answer is policy's,
        exactly as for a forbidden SSH connection: no word of its kind.
        """
        outputs = {}
        for name in ("secret-db", "secret-web"):
            code, output = yield self.ssh("true", user=name)
            self.assertEqual(code, 255, output)
            outputs[name] = output.replace(name.encode(), b"<name>")
        self.assertEqual(outputs["secret-db"], outputs["secret-web"])
        self.assertIn(b'hoopgw: session refused: denied by policy rule "no-secrets"', outputs["secret-db"])
        self.assertNotIn(b"postgres", outputs["secret-db"])
        yield self.watch.wait("session.refused", 2)
        records = self.written()
        self.assertEqual([(r["event"], r["decision"]["rule"]) for r in records], [("session.refused", "no-secrets")] * 2)

    @inlineCallbacks
    def test_names_in_another_case(self):
        """User names are exact: APPDB or Appdb names no connection, refused as unknown."""
        for name in ("APPDB", "Appdb"):
            code, output = yield self.ssh("true", user=name)
            self.assertEqual(code, 255, output)
            self.assertIn(f"hoopgw: session refused: no connection named {name!r}".encode(), output)
            self.assertNotIn(b"postgres", output)
        yield self.watch.wait("session.refused", 2)
        self.assertEqual([r["connection"] for r in self.written()], ["APPDB", "Appdb"])


class ShutdownTests(SSHGatewayCase):
    @inlineCallbacks
    def test_stop_tells_the_client_why(self):
        """
        If the gateway stops while ssh runs a command, the client gets a
        disconnect message naming the reason (ssh prints it), and
        session.end says terminated with it.
        """
        proc = spawn(self.ssh_argv("-n", "echo started; sleep 30"), marker=b"started", env=self.env())
        yield proc.ready
        yield self.gateway.stopService()
        code = yield proc.ended
        self.assertNotEqual(code, 0)
        self.assertIn(b"hoopgw: the gateway is shutting down", proc.output)
        [end] = self.records("session.end")
        self.assertEqual((end["end"]["status"], end["end"]["error"]), ("terminated", "the gateway is shutting down"))

    @inlineCallbacks
    def test_stop_tells_a_client_still_logging_in(self):
        """
        A client the gateway has asked for its token when it stops (no
        session yet) reads the disconnect message with the reason too.
        """
        askpass = self.base / "askpass"
        asked = self.base / "asked"
        # Answers only after the gateway has stopped and closed the connection.
        askpass.write_text(f"#!/bin/sh\ntouch {asked}\nsleep 2\necho not-a-token\n")
        askpass.chmod(0o755)
        argv = self.ssh_argv("-n", "-o", "PreferredAuthentications=keyboard-interactive", "true", batch=False)
        proc = spawn(argv, marker=None, env=self.env(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force",
                                                      DISPLAY=":0"))
        from tests.integration.test_postgres_clients import wait_until

        yield wait_until(lambda: asked.exists(), "ssh to ask for the token")
        yield self.gateway.stopService()
        code = yield proc.ended
        self.assertEqual(code, 255, proc.output)
        self.assertIn(b"hoopgw: the gateway is shutting down", proc.output)


class ForwardDenyListTests(SSHGatewayCase):
    """
    A deny rule naming forbidden destinations (the shipped policy's advice)
    holds for other spellings of the same address: the target resolves
    C{127.1}, C{2130706433}, C{0x7f.0.0.1} and C{[::ffff:127.0.0.1]} as
    C{127.0.0.1}.
    """

    policy = """
[[rule]]
name = "everything"
effect = "allow"

[[rule]]
name = "no-loopback-forwarding"
effect = "deny"
actions = ["ssh.forward"]
ssh.forward.destinations = ["127.0.0.1:*", "localhost:*"]
"""

    @inlineCallbacks
    def test_other_spellings_of_a_denied_address(self):
        reached = []
        for host in ("127.1", "2130706433", "0x7f.0.0.1", "0177.0.0.1", "127.0.1", "LOCALHOST", "localhost."):
            # Reached, the target's sshd waits for a client banner: timeout ends it.
            code, output = yield run(["timeout", "5", *self.ssh_argv("-n", "-W", f"{host}:{self.sshd_port}", "")],
                                     env=self.env())
            if b"SSH-2.0-" in output or b"no-loopback-forwarding" not in output:
                reached.append((host, code, output[-200:]))
        self.assertEqual(reached, [])
        code, output = yield self.ssh("-W", f"127.0.0.1:{self.sshd_port}", "")
        self.assertIn(b"no-loopback-forwarding", output)

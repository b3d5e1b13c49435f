"""
The fixture of the SSH integration tests: an OpenSSH C{sshd} started by the
test (its own host key, loopback only, the gateway's target key
authorised), the gateway in-process, and helpers to run the real C{ssh},
C{sftp} and C{scp} clients through it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.conch.ssh.keys import Key
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import SkipTest, TestCase

from hoopgw.audit.search import search
from hoopgw.config import loads
from hoopgw.gateway import Gateway
from hoopgw.identity.ssh import openssh_fingerprint
from tests.integration._process import free_port, run, spawn

SSHD = "/usr/sbin/sshd"
SSH = shutil.which("ssh") or "/usr/bin/ssh"
SFTP = shutil.which("sftp") or "/usr/bin/sftp"
SCP = shutil.which("scp") or "/usr/bin/scp"
SSH_AGENT = shutil.which("ssh-agent") or "/usr/bin/ssh-agent"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def require(program: str) -> None:
    if not os.path.exists(program):
        if os.environ.get("CI") == "true":
            raise AssertionError(f"{program} is missing under CI")
        raise SkipTest(f"{program} is not installed")


def new_key(path: Path) -> Key:
    """An Ed25519 key in OpenSSH format at C{path} (0600), its public line beside it."""
    key = Key(Ed25519PrivateKey.generate())
    path.write_bytes(key.toString("OPENSSH"))
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    Path(f"{path}.pub").write_bytes(key.public().toString("OPENSSH") + b"\n")
    return key


def public_line(key: Key) -> str:
    return key.public().toString("OPENSSH").decode("ascii")


class AuditWatch:
    """Fires Deferreds when records of an event have been written (no polling)."""

    def __init__(self, audit: Any) -> None:
        self.counts: dict[str, int] = {}
        self.waiters: list[tuple[str, int, Deferred]] = []
        original = audit.append

        def append(event: str, body: Any) -> Deferred:
            d = original(event, body)
            d.addCallback(self._written, event)
            return d

        audit.append = append

    def _written(self, result: Any, event: str) -> Any:
        self.counts[event] = self.counts.get(event, 0) + 1
        for waiter in list(self.waiters):
            name, count, d = waiter
            if name == event and self.counts[event] >= count:
                self.waiters.remove(waiter)
                d.callback(None)
        return result

    def wait(self, event: str, count: int = 1) -> Deferred:
        d: Deferred = Deferred()
        if self.counts.get(event, 0) >= count:
            d.callback(None)
        else:
            self.waiters.append((event, count, d))
        return d


class SSHGatewayCase(TestCase):
    """
    A gateway with connection C{web1} in front of a real sshd.  Subclasses
    may set C{policy} (TOML: the gateway then loads only it, from its own
    policy folder) and C{connection_options} (more keys of C{web1}).
    """

    timeout = 60
    policy: str | None = None
    connection_options: str = ""
    extra_config: str = ""  # more TOML after the connections (e.g. another [[connections]])
    sftp_start: str | None = None  # sftp-server -d: the SFTP starting directory, under the test's folder
    with_api: bool = False  # an API listener too (self.api_url)

    @inlineCallbacks
    def setUp(self):
        require(SSHD)
        require(SSH)
        require(SFTP_SERVER)
        self.base = Path(self.mktemp()).resolve()
        self.base.mkdir()
        user = pwd.getpwuid(os.getuid()).pw_name

        # The target: sshd on loopback, accepting only the gateway's key.
        sshd_host_key = new_key(self.base / "sshd_host_ed25519")
        target_key = new_key(self.base / "target_key")
        (self.base / "authorized_keys").write_text(public_line(target_key) + "\n")
        self.sshd_port = free_port()
        (self.base / "sshd_config").write_text(
            f"""
Port {self.sshd_port}
ListenAddress 127.0.0.1
HostKey {self.base / "sshd_host_ed25519"}
PidFile none
StrictModes no
AuthorizedKeysFile {self.base / "authorized_keys"}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
AllowTcpForwarding yes
AllowAgentForwarding yes
X11Forwarding no
AcceptEnv LANG LC_*
Subsystem sftp {SFTP_SERVER}{self._sftp_start_option()}
"""
        )
        if os.getuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation folder
        self.sshd = spawn(
            [SSHD, "-D", "-e", "-f", str(self.base / "sshd_config")],
            marker=b"Server listening",
            env={"PATH": os.environ.get("PATH", "")},
        )
        self.addCleanup(self._stop_sshd)
        yield self.sshd.ready

        # The clients: alice's mapped key, and a key nobody mapped.
        alice = new_key(self.base / "alice")
        new_key(self.base / "stranger")
        other = Key(Ed25519PrivateKey.generate())
        policies = ""
        policy = self.policy_text()
        if policy is not None:
            (self.base / "policies").mkdir()
            (self.base / "policies" / "test.toml").write_text(policy)
            policies = 'policies = "policies"'
        config = loads(
            f"""
[gateway]
data_dir = "data"
{policies}
[listen]
ssh = "tcp:0:interface=127.0.0.1"
postgres = false
http = false
api = {'"tcp:0:interface=127.0.0.1"' if self.with_api else "false"}
[[identity.ssh_keys]]
subject = "alice"
groups = ["dev"]
public_key = "{public_line(alice)}"
[[connections]]
name = "web1"
kind = "ssh"
address = "127.0.0.1:{self.sshd_port}"
user = "{user}"
key_file = "target_key"
host_key = "{public_line(sshd_host_key)}"
{self.connection_options}
[[connections]]
name = "impostor"
kind = "ssh"
address = "127.0.0.1:{self.sshd_port}"
user = "{user}"
key_file = "target_key"
host_key = "{public_line(other)}"
{self.extra_config_text()}
""",
            source=None,
            base_dir=self.base,
        )
        self.expected_fp = openssh_fingerprint(other.blob())
        self.presented_fp = openssh_fingerprint(sshd_host_key.blob())
        self.gateway = Gateway(config, reactor=reactor)
        self.watch = AuditWatch(self.gateway.audit)
        self.gateway.startService()
        self.addCleanup(self.gateway.stopService)
        self.port = self.gateway.listeners["ssh"].port.getHost().port
        if self.with_api:
            self.api_url = f"http://127.0.0.1:{self.gateway.listeners['api'].port.getHost().port}"

    def _sftp_start_option(self) -> str:
        if self.sftp_start is None:
            return ""
        start = self.base / self.sftp_start
        start.mkdir(exist_ok=True)
        return f" -d {start}"

    def extra_config_text(self) -> str:
        return self.extra_config

    def policy_text(self) -> str | None:
        return self.policy

    def _stop_sshd(self):
        self.sshd.signal("TERM")
        return self.sshd.ended

    def ssh_argv(self, *args: str, key: str = "alice", user: str = "web1", batch: bool = True) -> list[str]:
        argv = [
            SSH, "-F", "/dev/null",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10",
            "-p", str(self.port),
        ]
        if batch:
            argv += ["-o", "BatchMode=yes", "-i", str(self.base / key)]
        return [*argv, *args[:-1], f"{user}@127.0.0.1", args[-1]] if args else [*argv, f"{user}@127.0.0.1"]

    def ssh(self, *args: str, env: dict | None = None, **kw: Any) -> Deferred:
        environment = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.base)}
        environment.update(env or {})
        return run(self.ssh_argv("-n", *args, **kw), env=environment)

    def env(self, **extra: str) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", ""), "HOME": str(self.base), **extra}

    def client_options(self) -> list[str]:
        """The options of C{ssh_argv}, for sftp and scp (which spell the port C{-P})."""
        return [
            "-F", "/dev/null",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10",
            "-o", "BatchMode=yes", "-i", str(self.base / "alice"),
            "-P", str(self.port),
        ]

    def sftp(self, *commands: str) -> Deferred:
        """Run C{sftp -b} with these batch commands; fires with (exit code, output)."""
        require(SFTP)
        batch = self.base / f"batch-{len(list(self.base.glob('batch-*')))}"
        batch.write_text("".join(f"{c}\n" for c in commands))
        return run([SFTP, *self.client_options(), "-b", str(batch), "web1@127.0.0.1"], env=self.env())

    def scp(self, *args: str) -> Deferred:
        require(SCP)
        return run([SCP, *self.client_options(), *args], env=self.env())

    def records(self, event: str) -> list[dict]:
        return list(search(self.base / "data" / "audit", event=event))

    def actions(self, kind: str) -> list[tuple[dict, dict | None]]:
        """(action.start, action.end) pairs of one kind."""
        ends = {r["action"]["id"]: r for r in self.records("action.end")}
        return [
            (r, ends.get(r["action"]["id"]))
            for r in self.records("action.start")
            if r["action"]["kind"] == kind
        ]


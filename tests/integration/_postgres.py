"""
Throwaway PostgreSQL clusters for integration tests.

    cluster = start_postgres(self, hba=["host all all 127.0.0.1/32 scram-sha-256"],
                             roles={"app": "secret"})
    cluster.host, cluster.port   # TCP on 127.0.0.1, a free port
    cluster.socket_dir           # Unix socket, for psql as the superuser

Each cluster lives in its own temporary directory (data, socket, log) and is
stopped and deleted by the test's cleanup, also when starting it failed half
way.  The server refuses to run as root, so as root it runs as the
C{postgres} user via C{runuser}.  Without the binaries the test is skipped,
unless CI=true, where that is a failure.

Blocking by design: start-up runs before the test's reactor work begins
(initdb takes a second or two), which keeps this usable from any test class.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest

from tests.integration._process import free_port

PG_BIN = Path(os.environ.get("HOOPGW_PG_BIN", "/usr/lib/postgresql/15/bin"))
SUPERUSER = "postgres"
READY = "ready to accept connections"


def _unavailable(why: str) -> Exception:
    if os.environ.get("CI") == "true":
        return AssertionError(f"PostgreSQL integration test cannot run under CI: {why}")
    return SkipTest(why)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class PostgresCluster:
    """
    One PostgreSQL server: L{start} it, L{stop} it (idempotent).  C{hba}
    lines come first in pg_hba.conf, after a line that lets the superuser in
    over the Unix socket (which setup needs); C{roles} maps role names to
    passwords (None: no password) and each gets LOGIN; C{settings} are extra
    postgresql.conf lines; C{ssl} is a (certificate, key) pair of PEM files
    to serve TLS with.
    """

    def __init__(
        self,
        *,
        hba: Sequence[str] = ("host all all 127.0.0.1/32 trust",),
        roles: Mapping[str, str | None] = {},
        settings: Mapping[str, str] = {},
        ssl: tuple[str, str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.hba = list(hba)
        self.roles = dict(roles)
        self.settings = dict(settings)
        self.ssl = ssl
        self.startup_timeout = startup_timeout
        self.host = "127.0.0.1"
        self.port = 0
        self.base: Path | None = None
        self._process: subprocess.Popen | None = None
        self._as_root = os.geteuid() == 0

    # Paths inside the cluster's directory.
    @property
    def data_dir(self) -> Path:
        assert self.base is not None
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.base is not None
        return self.base / "socket"

    @property
    def log_file(self) -> Path:
        assert self.base is not None
        return self.base / "postgres.log"

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except (OSError, AssertionError):
            return ""

    def logged(self, text: str, timeout: float = 5.0) -> Deferred[str]:
        """
        Fires with the server's log once it holds C{text}, or as it is after
        C{timeout} seconds: a backend may log after its client has already
        seen the connection end (a failed TLS handshake is logged once the
        other side has closed).
        """
        deadline = time.monotonic() + timeout

        def poll() -> str | Deferred[str]:
            log = self.log()
            if text in log or time.monotonic() >= deadline:
                return log
            return deferLater(reactor, 0.05, poll)

        return maybeDeferred(poll)

    def _argv(self, program: str, *args: str) -> list[str]:
        argv = [str(PG_BIN / program), *args]
        return ["runuser", "-u", SUPERUSER, "--", *argv] if self._as_root else argv

    def _run(self, program: str, *args: str) -> str:
        result = subprocess.run(
            self._argv(program, *args), check=False, capture_output=True, text=True, timeout=120, cwd=str(self.base)
        )
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result.stdout

    def start(self) -> PostgresCluster:
        for program in ("initdb", "postgres", "psql"):
            if not (PG_BIN / program).exists():
                raise _unavailable(f"{PG_BIN / program} is missing (install postgresql-15)")
        if self._as_root:
            try:
                owner = pwd.getpwnam(SUPERUSER)
            except KeyError:
                raise _unavailable(f"running as root and there is no {SUPERUSER!r} user to run the server as")
            if shutil.which("runuser") is None:
                raise _unavailable("running as root and runuser is missing")
        self.base = Path(tempfile.mkdtemp(prefix="hoopgw-pg-"))
        try:
            self.socket_dir.mkdir()
            if self._as_root:
                for path in (self.base, self.socket_dir):
                    os.chown(path, owner.pw_uid, owner.pw_gid)
            self._run("initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C")
            self._configure(owner if self._as_root else None)
            self._launch()
            self._create_roles()
        except BaseException:
            log = self.log()
            self.stop()
            if log:
                print(f"PostgreSQL log:\n{log}")
            raise
        return self

    def _configure(self, owner: pwd.struct_passwd | None) -> None:
        hba = [f"local all {SUPERUSER} trust", *self.hba]
        (self.data_dir / "pg_hba.conf").write_text("\n".join(hba) + "\n")
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": _quote_literal(str(self.socket_dir)),
            "fsync": "off",
            "logging_collector": "off",
        }
        if self.ssl is not None:
            cert, key = self.ssl
            for source, name in ((cert, "server.crt"), (key, "server.key")):
                target = self.data_dir / name
                shutil.copyfile(source, target)
                os.chmod(target, 0o600)  # the server refuses a group/world-readable key
                if owner is not None:
                    os.chown(target, owner.pw_uid, owner.pw_gid)
            conf.update(ssl="on", ssl_cert_file="'server.crt'", ssl_key_file="'server.key'")
        conf.update(self.settings)
        with open(self.data_dir / "postgresql.conf", "a") as f:
            f.write("\n# hoopgw test settings\n")
            for key, value in conf.items():
                f.write(f"{key} = {value}\n")

    def _launch(self) -> None:
        # The port is free when chosen but may be taken before the server
        # binds it; then try another.
        for attempt in range(5):
            self.port = free_port()
            offset = len(self.log().encode())
            with open(self.log_file, "ab") as log:
                self._process = subprocess.Popen(
                    self._argv("postgres", "-D", str(self.data_dir), "-p", str(self.port)),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=str(self.base),
                    start_new_session=True,
                )
            if self._wait_ready(offset):
                return
            if "could not bind" in self.log() and attempt < 4:
                self._kill()
                continue
            raise RuntimeError(f"PostgreSQL did not start:\n{self.log()}")

    def _wait_ready(self, offset: int) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        assert self._process is not None
        while time.monotonic() < deadline:
            text = self.log_file.read_bytes()[offset:].decode(errors="replace")
            if READY in text:
                return True
            if self._process.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def _create_roles(self) -> None:
        for name, password in self.roles.items():
            sql = f"CREATE ROLE {_quote_ident(name)} LOGIN"
            if password is not None:
                sql += f" PASSWORD {_quote_literal(password)}"
            self.psql(sql)

    def psql(self, sql: str, *, database: str = "postgres") -> str:
        """Run SQL as the superuser over the Unix socket; returns psql's unaligned output."""
        return self._run(
            "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", str(self.socket_dir), "-p", str(self.port), "-U", SUPERUSER, "-d", database, "-c", sql,
        )

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        # SIGINT is the postmaster's "fast shutdown".  The process group
        # (start_new_session) holds runuser and the server it runs, and only
        # them; it is signalled by its id.
        for sig, wait in ((signal.SIGINT, 15), (signal.SIGKILL, 10)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass
            try:
                process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def stop(self) -> None:
        """Stop the server and delete its directory.  Safe to call twice, or after a failed start."""
        self._kill()
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_postgres(testcase, **options) -> PostgresCluster:
    """Start a L{PostgresCluster} (options as its constructor) stopped by C{testcase}'s cleanup."""
    cluster = PostgresCluster(**options)
    testcase.addCleanup(cluster.stop)
    return cluster.start()

"""
The shipped examples run as their comments say: `twistd hoopgw` starts on
every one of them, and the quickstart reaches a real query through the real
psql with a token from the real `hoopgw token issue`.
"""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
from pathlib import Path

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.integration._postgres import start_postgres
from tests.integration._process import HOOPGW, TWISTD, child_env, run, spawn
from tests.integration.test_postgres_proxy import PSQL, require

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
READY = b"hoopgw ready"
# The variables examples/hoopgw.toml references, as its header says to set them.
SECRETS = {"APPDB_PASSWORD": "x", "WEB1_PASSWORD": "x", "K8S_TOKEN": "x", "HOOPGW_WEBHOOK_SECRET": "x"}


def copy_example(name: str, directory: Path) -> Path:
    """The example and what it names beside it, its fixed ports made free ones (tests run side by side)."""
    directory.mkdir(parents=True)
    for shipped in EXAMPLES.iterdir():
        if shipped.is_file():
            shutil.copy(shipped, directory / shipped.name)
    config = directory / name
    text = re.sub(r'"tcp:\d+:', '"tcp:0:', config.read_text())
    if "[listen]" not in text:  # the default ports, made free ones
        text += "\n[listen]\n" + "".join(f'{n} = "tcp:0:interface=127.0.0.1"\n' for n in ("postgres", "ssh", "http", "api"))
    config.write_text(text)
    return config


class ExampleTests(TestCase):
    timeout = 90

    def twistd(self, config: Path, env: dict):
        proc = spawn(TWISTD + ["-n", "--pidfile=", "hoopgw", "--config", str(config)], marker=READY,
                     cwd=str(config.parent), env=child_env(**env))
        self.addCleanup(lambda: proc.signal("KILL"))
        return proc

    @inlineCallbacks
    def test_every_example_starts(self):
        for name in sorted(p.name for p in EXAMPLES.glob("*.toml")):
            config = copy_example(name, Path(self.mktemp()).resolve())
            proc = self.twistd(config, {**SECRETS, "HOOPGW_LOCALDB_PASSWORD": "x"})
            yield proc.ready
            self.assertNotIn(b"Traceback", proc.output, name)
            proc.signal("TERM")
            yield proc.ended

    @inlineCallbacks
    def test_quickstart_reaches_a_query(self):
        require(PSQL)
        cluster = start_postgres(self, hba=["host all postgres 127.0.0.1/32 scram-sha-256"])
        cluster.psql("SET password_encryption = 'scram-sha-256'; ALTER ROLE postgres PASSWORD 'local-secret'")
        config = copy_example("quickstart.toml", Path(self.mktemp()).resolve())
        config.write_text(config.read_text().replace("127.0.0.1:5432", f"127.0.0.1:{cluster.port}"))
        proc = self.twistd(config, {"HOOPGW_LOCALDB_PASSWORD": "local-secret"})
        yield proc.ready
        port = int(re.search(rb"postgres listening on 127\.0\.0\.1:(\d+)", proc.output).group(1))
        code, token = yield run([*HOOPGW, "--config", str(config), "token", "issue", "--sub", "alice", "--group", "dev"],
                                cwd=str(config.parent), env=child_env())
        self.assertEqual(code, 0, token)
        code, output = yield run(
            [PSQL, "-X", "-A", "-t", f"host=127.0.0.1 port={port} dbname=localdb user=alice sslmode=require",
             "-c", "SELECT current_user"],
            env=child_env(PGPASSWORD=token.decode().strip().splitlines()[-1]),
        )
        self.assertEqual((code, output.strip()), (0, b"postgres"), output)
        proc.signal("TERM")
        yield proc.ended


class SystemdUnitTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_exec_start_and_reload(self):
        """
        The unit's ExecStart (its paths made this machine's) starts the
        gateway in the foreground, and its ExecReload (SIGHUP) re-reads the
        policies, as docs/operations.md says.
        """
        unit = configparser.ConfigParser(interpolation=None, strict=False)
        unit.read(EXAMPLES / "systemd" / "hoopgw.service")
        start = shlex.split(unit["Service"]["ExecStart"])
        self.assertEqual(start[0], "/opt/hoopgw/bin/twistd")
        self.assertEqual(unit["Service"]["ExecReload"], "/bin/kill -HUP $MAINPID")
        config = copy_example("quickstart.toml", Path(self.mktemp()).resolve())
        argv = [*TWISTD, *start[1:]]
        argv[argv.index("/etc/hoopgw/hoopgw.toml")] = str(config)
        proc = spawn(argv, marker=READY, cwd=str(config.parent), env=child_env(HOOPGW_LOCALDB_PASSWORD="x"))
        self.addCleanup(lambda: proc.signal("KILL"))
        yield proc.ready
        reloaded = proc.wait_for(b"policy reloaded")
        proc.signal("HUP")
        yield reloaded
        proc.signal("TERM")
        yield proc.ended
        self.assertNotIn(b"Traceback", proc.output)

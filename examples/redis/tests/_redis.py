"""
A throwaway redis-server for tests, and a blocking client that speaks
through the codec under test.

    server = start_redis(self)        # stopped by the test's cleanup
    with server.connect() as client:
        client.call(b"SET", b"k", b"v")

The server listens on 127.0.0.1, on a port below 32768 (redis-server cannot
pick its own: port 0 turns TCP off), chosen at random and retried if taken;
it runs in its own temporary directory with persistence off and DEBUG
allowed from loopback (DEBUG PROTOCOL sends every RESP3 type).  Start-up
waits for "Ready to accept connections" on its log, never a fixed sleep.
Without redis-server the test is skipped, unless CI=true, where that is a
failure.
"""

from __future__ import annotations

import os
import random
import select
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from twisted.trial.unittest import SkipTest

from hoopgw_redis.resp import ReplyParser, encode_command

READY = b"Ready to accept connections"
IN_USE = b"Address already in use"


def _unavailable(why: str) -> Exception:
    if os.environ.get("CI") == "true":
        return AssertionError(f"redis integration test cannot run under CI: {why}")
    return SkipTest(why)


class RedisServer:
    def __init__(self, *, startup_timeout: float = 20.0, args: Sequence[str] = (), password: str | None = None) -> None:
        self.startup_timeout = startup_timeout
        # More redis-server options (--rename-command ..., TLS); with a
        # --requirepass among them, pass the password too so that the
        # server's own checks (and connect()) log in.
        self.args = tuple(args)
        self.password = password
        self.host = "127.0.0.1"
        self.port = 0
        self.version = ""
        self.log = b""
        self._dir: str | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        program = shutil.which("redis-server")
        if program is None:
            raise _unavailable("redis-server is missing (apt-get install redis-server)")
        self._dir = tempfile.mkdtemp(prefix="hoopgw-redis-")
        try:
            for _ in range(20):
                if self._launch(program, random.randrange(20000, 32768)):
                    return self
            raise RuntimeError(f"redis-server found no free port:\n{self.log.decode(errors='replace')}")
        except BaseException:
            self.stop()
            raise

    def _launch(self, program: str, port: int) -> bool:
        """Start on C{port}; False if the port was taken (try another)."""
        argv = [
            program,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", self._dir or ".",
            "--save", "",
            "--appendonly", "no",
            "--enable-debug-command", "local",
            "--loglevel", "notice",
            *self.args,
        ]  # fmt: skip
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self._dir)
        assert process.stdout is not None
        fd = process.stdout.fileno()
        log = b""
        deadline = time.monotonic() + self.startup_timeout
        while READY not in log:
            left = deadline - time.monotonic()
            if left <= 0:
                process.kill()
                process.wait()
                raise RuntimeError(f"redis-server not ready after {self.startup_timeout}s:\n{log.decode(errors='replace')}")
            readable, _, _ = select.select([fd], [], [], left)
            if not readable:
                continue
            data = os.read(fd, 65536)
            if not data:  # it exited
                process.wait()
                self.log += log
                if IN_USE in log:
                    return False
                raise RuntimeError(f"redis-server exited ({process.returncode}):\n{log.decode(errors='replace')}")
            log += data
        self.log += log
        self.port = port
        self._process = process
        with self.connect() as client:
            info = client.call(b"INFO", b"server")
        for line in info.splitlines():
            if line.startswith(b"redis_version:"):
                self.version = line.split(b":", 1)[1].decode()
        return True

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def connect(self, timeout: float = 10.0) -> Client:
        client = Client(socket.create_connection((self.host, self.port), timeout=timeout))
        if self.password is not None:
            client.call(b"AUTH", self.password)
        return client


class Client:
    """A blocking connection that writes raw bytes and reads replies with L{ReplyParser}."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parser = ReplyParser()
        self.replies: list[Any] = []
        self.received = b""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, count: int = 1) -> list[Any]:
        """The next C{count} replies (pushes count too)."""
        while len(self.replies) < count:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"server closed the connection; received so far: {self.received[-200:]!r}")
            self.received += data
            self.replies += self.parser.feed(data)
        replies, self.replies = self.replies[:count], self.replies[count:]
        return replies

    def read_until_closed(self) -> bytes:
        """Everything the server sends until it closes the connection (raw, unparsed)."""
        chunks: list[bytes] = []
        while True:
            data = self.sock.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)

    def call(self, *args: bytes | str | int) -> Any:
        self.send(encode_command(*args))
        return self.read()[0]


def start_redis(case: Any, *, args: Sequence[str] = (), password: str | None = None) -> RedisServer:
    """A running redis-server, stopped by C{case}'s cleanup."""
    server = RedisServer(args=args, password=password)
    case.addCleanup(server.stop)
    return server.start()

"""
Record a real redis-server's C{COMMAND INFO} for the commands the key
tests use into C{tests/captured_commands.py}, so they run without a server
(C{test_commands.LiveCommandsTests} checks the record against a live one).

    cd examples/redis && PYTHONPATH=src:. python -m tests.capture_commands
"""

from __future__ import annotations

import sys
from pathlib import Path

from hoopgw_redis.resp import encode_command

from tests._redis import RedisServer

NAMES = (
    "get set del unlink mget mset msetnx hset hget hgetall lpush rpush lrange blpop brpop blmove lmove "
    "expire rename renamenx copy move smove sinterstore bitop pfmerge incr append "
    "eval evalsha eval_ro evalsha_ro fcall fcall_ro script function "
    "config client object memory xgroup xinfo acl debug "
    "sort sort_ro migrate xread xreadgroup xadd georadius georadiusbymember "
    "zunionstore zinterstore zunion zdiff zdiffstore lmpop blmpop zmpop bzmpop sintercard zintercard "
    "subscribe psubscribe ssubscribe unsubscribe publish spublish "
    "select swapdb flushall flushdb keys scan randomkey restore dump "
    "multi exec discard watch auth hello reset monitor ping quit"
).split()


def capture(server: RedisServer) -> bytes:
    with server.connect() as client:
        client.send(encode_command(b"COMMAND", b"INFO", *NAMES))
        client.read(1)
        return client.received


def main() -> None:
    server = RedisServer().start()
    try:
        data = capture(server)
        version = server.version
    finally:
        server.stop()
    path = Path(__file__).with_name("captured_commands.py")
    path.write_text(
        '"""\n'
        f"COMMAND INFO of redis-server {version}, recorded by tests/capture_commands.py (do not edit by hand).\n"
        '"""\n\n'
        f"REDIS_VERSION = {version!r}\n\n"
        f"NAMES = {NAMES!r}\n\n"
        f"COMMAND_INFO = {data!r}\n"
    )
    print(f"wrote {path} ({len(data)} bytes from redis-server {version})", file=sys.stderr)


if __name__ == "__main__":
    main()

"""
RESP codec micro-benchmark: 100,000 pipelined C{GET k} commands parsed by
the request parser, and their 100,000 replies (C{$5 value}) by the reply
parser, each stream fed in 1-byte, 7-byte and 64 KiB chunks.  Linear
buffering shows as a per-command cost that does not grow with the chunk
count; a quadratic one would make the 1-byte run take hours.

    python bench/resp_codec.py [--commands N]

Prints a markdown table; L{main} returns its rows.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from hoopgw_redis.resp import ReplyParser, RequestParser, encode, encode_command

CHUNKS = [1, 7, 64 * 1024]


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _run(parser_type: type, stream: bytes, size: int, expected: int) -> float:
    chunks = _chunks(stream, size)
    parser = parser_type()
    feed = parser.feed
    count = 0
    started = time.perf_counter()
    for chunk in chunks:
        count += len(feed(chunk))
    elapsed = time.perf_counter() - started
    assert count == expected, (count, expected)
    return elapsed


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    options = argparse.ArgumentParser()
    options.add_argument("--commands", type=int, default=100_000)
    args = options.parse_args(argv)
    n = args.commands
    streams = {
        "requests (GET k)": (RequestParser, encode_command(b"GET", b"k") * n),
        "replies ($5 value)": (ReplyParser, encode(b"value") * n),
    }
    rows = []
    for name, (parser_type, stream) in streams.items():
        for size in CHUNKS:
            elapsed = min(_run(parser_type, stream, size, n) for _ in range(3))
            rows.append(
                {
                    "stream": name,
                    "chunk": f"{size} B" if size < 1024 else f"{size // 1024} KiB",
                    "bytes": len(stream),
                    "seconds": round(elapsed, 3),
                    "us_per_message": round(elapsed / n * 1e6, 2),
                    "MB_per_s": round(len(stream) / elapsed / 1e6, 1),
                }
            )
    print("| stream | chunk | bytes | s (best of 3) | µs/message | MB/s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['stream']} | {row['chunk']} | {row['bytes']} | {row['seconds']} | {row['us_per_message']} | {row['MB_per_s']} |")
    return rows


if __name__ == "__main__":
    main()

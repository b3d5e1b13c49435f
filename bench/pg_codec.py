"""
PostgreSQL codec micro-benchmark: how fast the backend parser frames a
captured-like result stream (RowDescription, many DataRows,
CommandComplete, ReadyForQuery) fed in socket-sized chunks, and what the
lazy extras cost (decoding values, rebuilding a row after masking one
column, re-joining raw bytes for relay).

    python bench/pg_codec.py [--rows N]

Prints a markdown table; L{main} returns its rows.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

from hoopgw.protocols.postgres.codec import (
    BackendParser,
    CommandComplete,
    DataRow,
    FieldDescription,
    ReadyForQuery,
    RowDescription,
    encode,
)


def result_stream(rows: int, seed: int = 1) -> bytes:
    """A users-table-like result: id, email, name, created_at, balance, note (sometimes NULL)."""
    rng = random.Random(seed)
    columns = ["id", "email", "name", "created_at", "balance", "note"]
    parts = [encode(RowDescription([FieldDescription(c, 16384, i + 1, 25) for i, c in enumerate(columns)]))]
    for i in range(rows):
        name = "".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(4, 12)))
        parts.append(
            encode(
                DataRow.from_values(
                    [
                        str(i).encode(),
                        f"{name}@example.com".encode(),
                        name.title().encode(),
                        b"2024-05-01 12:34:56.789+00",
                        f"{rng.randint(0, 10**7) / 100:.2f}".encode(),
                        None if rng.random() < 0.5 else b"x" * rng.randint(0, 40),
                    ]
                )
            )
        )
    parts.append(encode(CommandComplete(f"SELECT {rows}")))
    parts.append(encode(ReadyForQuery("I")))
    return b"".join(parts)


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _best(fn: Callable[[], Any], repeat: int = 5) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args(argv)
    stream = result_stream(args.rows)
    messages = args.rows + 3
    mb = len(stream) / 1e6
    rows: list[dict[str, Any]] = []

    def add(what: str, seconds: float, volume: float | None = None) -> None:
        rows.append(
            {
                "measurement": what,
                "MB/s": f"{volume / seconds:,.0f}" if volume is not None else "",
                "messages/s": f"{messages / seconds:,.0f}",
            }
        )

    for size in (65536, 16384, 1460):
        chunks = _chunks(stream, size)

        def frame(chunks: list[bytes] = chunks) -> list:
            p = BackendParser()
            out: list = []
            for chunk in chunks:
                out.extend(p.feed(chunk))
            return out

        seconds, parsed = _best(frame)
        assert len(parsed) == messages
        add(f"frame, {size}-byte reads", seconds, mb)

    seconds, _ = _best(lambda: b"".join([encode(m) for m in parsed]))
    add("relay: encode (raw) + join", seconds, mb)
    data_rows = [m for m in parsed if isinstance(m, DataRow)]
    seconds, _ = _best(lambda: [r.values for r in data_rows])
    add("decode DataRow.values", seconds)
    seconds, _ = _best(lambda: [r.replace_column(1, b"***@example.com") for r in data_rows])
    add("mask one column (replace_column)", seconds)

    print(f"{messages:,} messages, {mb:.1f} MB (average DataRow {len(stream) // messages} bytes)\n")
    print("| measurement | MB/s | messages/s |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row['measurement']} | {row['MB/s']} | {row['messages/s']} |")
    return rows


if __name__ == "__main__":
    main()

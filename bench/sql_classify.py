"""
SQL classification micro-benchmark: per-statement cost of
L{hoopgw.protocols.postgres.sql.classify} cold (a text not seen before: parse and walk)
and warm (the same text again: the LRU cache), per call (a query string),
with the parser's own steps for comparison: C{parse_json_us} is the C
parse alone, C{fingerprint_us} what a fingerprint-keyed cache would cost
per lookup (not used: it is unsafe, see L{hoopgw.protocols.postgres.sql}).

    python bench/sql_classify.py

Prints a markdown table; L{main} returns its rows.
"""

from __future__ import annotations

import time
from typing import Any

from pglast import parser as pg

from hoopgw.protocols.postgres.sql import classify

STATEMENTS = {
    "short select": "SELECT * FROM users WHERE id = {n}",
    "typical 200-char select": (
        "SELECT o.id, o.total, c.email FROM public.orders o JOIN customers c ON c.id = "
        "o.customer_id WHERE o.created_at > now() - interval '7 days' AND o.status IN "
        "('paid', 'shipped') AND o.id > {n} ORDER BY o.created_at DESC LIMIT 50"
    ),
    "update": "UPDATE public.payments SET status = 'settled', settled_at = now() WHERE id = {n}",
    "cte delete": "WITH d AS (DELETE FROM jobs WHERE id < {n} RETURNING *) INSERT INTO jobs_done SELECT * FROM d",
    "3 statements": "BEGIN; UPDATE accounts SET balance = balance - 1 WHERE id = {n}; COMMIT",
}


def _per_call(fn: Any, texts: list[str]) -> float:
    start = time.perf_counter()
    for text in texts:
        fn(text)
    return (time.perf_counter() - start) / len(texts) * 1e6


def main(count: int = 2000) -> list[dict[str, Any]]:
    rows = []
    serial = int(time.time() * 1000)  # fresh constants: cold really is cold
    for name, template in STATEMENTS.items():
        texts = [template.format(n=serial + i) for i in range(count)]
        serial += count
        parse = _per_call(pg.parse_sql_json, texts)
        fingerprint = _per_call(pg.fingerprint, texts)
        cold = _per_call(classify, texts)
        warm = _per_call(classify, texts[-min(count, 1000):] * 5)
        rows.append({
            "statement": name,
            "chars": len(texts[0]),
            "statements": len(classify(texts[0])),
            "cold_us": round(cold, 1),
            "warm_us": round(warm, 2),
            "parse_json_us": round(parse, 1),
            "fingerprint_us": round(fingerprint, 1),
        })
    header = list(rows[0])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in header) + " |")
    return rows


if __name__ == "__main__":
    main()

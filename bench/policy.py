"""
Policy evaluation micro-benchmark: evaluations per second of a realistic
20-rule policy, one row per kind of action, plus a mixed workload.

    python bench/policy.py

Prints a markdown table; L{main} returns its rows.
"""

from __future__ import annotations

import time
from typing import Any

from hoopgw.model import Action, Identity
from hoopgw.policy import PolicySet, build_policy_set, evaluate

# 20 rules: allows per group and environment, guardrails, reviews.
BENCH_POLICY = b"""
[[rule]]
name = "dev-on-nonprod"
effect = "allow"
groups = ["dev", "dba", "sre"]
connections = ["dev-*", "staging-*"]

[[rule]]
name = "dev-reads-prod-db"
effect = "allow"
groups = ["dev"]
connections = ["prod-*db"]
actions = ["sql.query", "sql.execute"]
sql.statements = ["select", "show", "explain"]

[[rule]]
name = "dev-opens-prod-db"
effect = "allow"
groups = ["dev"]
connections = ["prod-*db"]
actions = ["session.open"]

[[rule]]
name = "dba-on-prod-db"
effect = "allow"
groups = ["dba"]
connections = ["prod-*db"]
actions = ["session.open", "sql.*"]

[[rule]]
name = "sre-on-prod"
effect = "allow"
groups = ["sre"]
connections = ["prod-*"]
actions = ["session.open", "ssh.*", "http.request", "k8s.*"]

[[rule]]
name = "dev-reads-prod-k8s"
effect = "allow"
groups = ["dev"]
connections = ["prod-k8s"]
actions = ["session.open", "k8s.get", "k8s.list", "k8s.watch"]

[[rule]]
name = "ci-migrates-staging"
effect = "allow"
users = ["svc-ci@*"]
connections = ["staging-*db"]
actions = ["session.open", "sql.*"]

[[rule]]
name = "analysts-read-warehouse"
effect = "allow"
groups = ["analyst"]
connections = ["prod-warehouse*"]
actions = ["session.open", "sql.query"]
sql.statements = ["select"]

[[rule]]
name = "no-destructive-ddl-on-prod"
effect = "deny"
connections = ["prod-*"]
sql.statements = ["drop", "truncate"]

[[rule]]
name = "no-unbounded-writes"
effect = "deny"
sql.statements = ["delete", "update"]
sql.without_where = true

[[rule]]
name = "no-risky-functions"
effect = "deny"
sql.functions = ["pg_sleep*", "pg_catalog.pg_sleep*", "dblink*", "pg_read_file"]

[[rule]]
name = "no-system-catalog-writes"
effect = "deny"
sql.writes = ["pg_catalog.*", "information_schema.*"]

[[rule]]
name = "no-rm-rf"
effect = "deny"
ssh.commands = ["rm -rf *", "rm -fr *", "sudo rm -rf *"]

[[rule]]
name = "no-power-control"
effect = "deny"
ssh.commands = ["shutdown*", "reboot*", "sudo shutdown*", "sudo reboot*"]

[[rule]]
name = "no-forwarding-on-prod"
effect = "deny"
connections = ["prod-*"]
actions = ["ssh.forward"]

[[rule]]
name = "no-namespace-delete"
effect = "deny"
k8s.verbs = ["delete", "deletecollection"]
k8s.resources = ["namespaces"]

[[rule]]
name = "no-prod-secrets"
effect = "deny"
connections = ["prod-*"]
k8s.resources = ["secrets"]

[[rule]]
name = "review-prod-writes"
effect = "review"
connections = ["prod-*db"]
sql.statements = ["insert", "update", "delete", "merge", "alter*", "create*"]
review.approvers = ["group:dba"]
review.timeout = "15m"

[[rule]]
name = "review-payment-writes"
effect = "review"
sql.writes = ["public.payments", "billing.*"]
review.approvers = ["group:finance-leads"]
review.timeout = "1h"

[[rule]]
name = "review-prod-exec"
effect = "review"
connections = ["prod-k8s"]
k8s.subresources = ["exec", "attach"]
review.approvers = ["group:sre-leads"]
"""

DEV = Identity("https://idp.example.com", "alice", groups=("dev", "staff"))
DBA = Identity("https://idp.example.com", "bob", groups=("dba",))
SRE = Identity("https://idp.example.com", "carol", groups=("sre", "staff"))

# (scenario, identity, connection, action, expected effect, expected rule)
SCENARIOS: tuple[tuple[str, Identity, str, Action, str, str | None], ...] = (
    (
        "dev SELECT on prod (allow)",
        DEV,
        "prod-appdb",
        Action("sql.query", "SELECT 1", {"sql.statements": ("select",), "sql.reads": ("public.users",)}),
        "allow",
        "dev-reads-prod-db",
    ),
    (
        "dba UPDATE payments on prod (2 reviews)",
        DBA,
        "prod-appdb",
        Action(
            "sql.query",
            "UPDATE payments SET x = 1 WHERE id = 2",
            {"sql.statements": ("update",), "sql.writes": ("public.payments",), "sql.without_where": False},
        ),
        "review",
        "review-prod-writes",
    ),
    (
        "dba DROP on prod (deny)",
        DBA,
        "prod-appdb",
        Action("sql.query", "DROP TABLE t", {"sql.statements": ("drop",), "sql.writes": ("public.t",)}),
        "deny",
        "no-destructive-ddl-on-prod",
    ),
    (
        "dev INSERT on prod (no rule)",
        DEV,
        "prod-appdb",
        Action("sql.query", "INSERT ...", {"sql.statements": ("insert",), "sql.writes": ("public.t",)}),
        "deny",
        None,
    ),
    (
        "sre ssh exec (allow)",
        SRE,
        "prod-web1",
        Action("ssh.exec", "uptime", {"ssh.commands": ("uptime",)}),
        "allow",
        "sre-on-prod",
    ),
    (
        "sre ssh rm -rf (deny)",
        SRE,
        "prod-web1",
        Action("ssh.exec", "rm -rf /var/lib", {"ssh.commands": ("rm -rf /var/lib",)}),
        "deny",
        "no-rm-rf",
    ),
    (
        "dev k8s get pods (allow)",
        DEV,
        "prod-k8s",
        Action(
            "k8s.get",
            "GET /api/v1/namespaces/web/pods",
            {"k8s.verbs": ("get",), "k8s.resources": ("pods",), "k8s.namespaces": ("web",), "k8s.groups": ("",)},
        ),
        "allow",
        "dev-reads-prod-k8s",
    ),
)


def bench_policy() -> PolicySet:
    return build_policy_set([("bench/policy.py", BENCH_POLICY)])


def _rate(policy: PolicySet, identity: Identity, connection: str, action: Action, seconds: float) -> float:
    """Best of three runs of evaluations per second."""
    best = 0.0
    for _ in range(3):
        n = 0
        batch = 2000
        start = time.perf_counter()
        deadline = start + seconds / 3
        while True:
            for _ in range(batch):
                evaluate(policy, identity, connection, action)
            n += batch
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, n / (now - start))
    return best


def main(seconds: float = 0.3) -> list[dict[str, Any]]:
    policy = bench_policy()
    assert len(policy.rules) == 20, len(policy.rules)
    rows = []
    for name, identity, connection, action, effect, rule in SCENARIOS:
        decision = evaluate(policy, identity, connection, action)
        assert (decision.effect.value, decision.rule) == (effect, rule), (name, decision)
        rate = _rate(policy, identity, connection, action, seconds)
        rows.append({"scenario": name, "effect": effect, "evaluations_per_s": round(rate), "us_per_eval": round(1e6 / rate, 2)})

    # The mixed workload cycles through every scenario.
    cases = [(i, c, a) for _, i, c, a, _, _ in SCENARIOS] * 300
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for identity, connection, action in cases:
            evaluate(policy, identity, connection, action)
        best = max(best, len(cases) / (time.perf_counter() - start))
    rows.append({"scenario": "mixed (all of the above)", "effect": "-", "evaluations_per_s": round(best), "us_per_eval": round(1e6 / best, 2)})

    print(f"Policy evaluation, {len(policy.rules)}-rule policy\n")
    print("| scenario | effect | evaluations/s | µs/evaluation |")
    print("| --- | --- | ---: | ---: |")
    for row in rows:
        print(f"| {row['scenario']} | {row['effect']} | {row['evaluations_per_s']:,} | {row['us_per_eval']} |")
    return rows


if __name__ == "__main__":
    main()

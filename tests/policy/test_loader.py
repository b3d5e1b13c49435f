"""
Tests for L{hoopgw.policy.loader}: policy files in, validated rules out,
and every error naming the file, the key and what was expected.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from hoopgw.errors import quote_choices
from hoopgw.policy.rules import CONDITIONS

from twisted.trial.unittest import SynchronousTestCase

from hoopgw.errors import ConfigError
from hoopgw.model import Action, Effect, Identity
from hoopgw.policy import (
    Condition,
    MaskRule,
    PolicyFile,
    ReviewRequirement,
    Rule,
    build_policy_set,
    evaluate,
    load_policy_dir,
    parse_policy_file,
)

REPO = Path(__file__).resolve().parents[2]
# The vocabulary grows as front ends add conditions; the message lists it sorted.
CONDITION_LIST = quote_choices(CONDITIONS)
RULE_KEY_LIST = (
    '"actions", "connections", "effect", "grant", "groups", "message", "name", "review", "users"'
)


def parse(text: str, file: str = "policies/db.toml") -> tuple[tuple[Rule, ...], tuple[MaskRule, ...]]:
    return parse_policy_file(text.encode("utf-8"), file=file)[:2]


class ParseTests(SynchronousTestCase):
    def assertError(self, text: str, message: str) -> None:
        error = self.assertRaises(ConfigError, parse, text)
        self.assertEqual(str(error), message)

    def test_fullRule(self) -> None:
        """
        Every key of a rule is parsed into the L{Rule}, dotted condition
        keys included, with the file and index for messages.
        """
        rules, masks = parse(
            """
            [[rule]]
            name = "allow"
            effect = "allow"

            [[rule]]
            name = "review-payments"
            effect = "review"
            groups = ["dev", "dba"]
            users = ["alice*"]
            connections = ["appdb", "prod-*"]
            actions = ["sql.*"]
            sql.writes = ["public.payments"]
            sql.without_where = false
            "ssh.commands" = ["rm *"]
            k8s = { verbs = ["delete"] }
            message = "ask a DBA"
            review.approvers = ["group:dba", "user:bob"]
            review.min_approvals = 2
            review.timeout = "1h30m"
            """
        )
        self.assertEqual(masks, ())
        self.assertEqual(rules[0], Rule("allow", Effect.allow))
        rule = rules[1]
        self.assertEqual(
            rule,
            Rule(
                name="review-payments",
                effect=Effect.review,
                groups=("dev", "dba"),
                users=("alice*",),
                connections=("appdb", "prod-*"),
                actions=("sql.*",),
                conditions=(
                    Condition("sql.writes", ("public.payments",)),
                    Condition("sql.without_where", False),
                    Condition("ssh.commands", ("rm *",)),
                    Condition("k8s.verbs", ("delete",)),
                ),
                message="ask a DBA",
                review=ReviewRequirement(("group:dba", "user:bob"), 2, 5400),
            ),
        )
        self.assertEqual((rule.source, rule.index), ("policies/db.toml", 1))
        self.assertEqual(rule.where(), 'policies/db.toml rule[1] ("review-payments")')

    def test_reviewDefaults(self) -> None:
        """
        A review rule's min_approvals defaults to 1 and its timeout to ten
        minutes; a [rule.review] sub-table is the same as dotted keys.
        """
        rules, _ = parse(
            '[[rule]]\nname = "r"\neffect = "review"\n[rule.review]\napprovers = ["user:bob"]\n'
        )
        self.assertEqual(rules[0].review, ReviewRequirement(("user:bob",), 1, 600))

    def test_mask(self) -> None:
        """
        A [[mask]] is parsed into a L{MaskRule}; strategy defaults to
        redact and connections to every connection.
        """
        _, masks = parse(
            """
            [[mask]]
            name = "pii"
            connections = ["prod-*"]
            columns = ["public.users.ssn", "*.*.email"]
            detectors = ["card", "ssn"]
            strategy = "partial"
            except_groups = ["pii-readers"]

            [[mask]]
            name = "keys"
            detectors = ["aws_key"]

            [[mask]]
            name = "orders"
            patterns = ["ORD-[0-9]{8}"]
            groups = ["support"]
            users = ["bot-*"]
            """
        )
        self.assertEqual(
            masks,
            (
                MaskRule("pii", ("prod-*",), ("public.users.ssn", "*.*.email"), ("card", "ssn"),
                         strategy="partial", except_groups=("pii-readers",)),
                MaskRule("keys", ("*",), (), ("aws_key",)),
                MaskRule("orders", patterns=("ORD-[0-9]{8}",), groups=("support",), users=("bot-*",)),
            ),
        )

    def test_empty(self) -> None:
        """
        An empty file is valid and has no rules.
        """
        self.assertEqual(parse(""), ((), ()))

    def test_unknownCondition(self) -> None:
        """
        A misspelt condition is refused with the rule's index and name, the
        list of conditions, and the closest one.
        """
        self.assertError(
            '[[rule]]\nname = "a"\neffect = "allow"\n'
            '[[rule]]\nname = "b"\neffect = "allow"\n'
            '[[rule]]\nname = "no-drops"\neffect = "deny"\nsql.statments = ["drop"]\n',
            'policies/db.toml: rule[2] ("no-drops").sql.statments: unknown condition; '
            f'expected one of {CONDITION_LIST}; did you mean "sql.statements"?',
        )

    def test_unknownNamespace(self) -> None:
        """
        A condition in an unknown namespace is an unknown condition.
        """
        self.assertError(
            '[[rule]]\nname = "x"\neffect = "deny"\nmysql.statements = ["drop"]\n',
            'policies/db.toml: rule[0] ("x").mysql.statements: unknown condition; '
            f'expected one of {CONDITION_LIST}; did you mean "sql.statements"?',
        )

    def test_unknownKey(self) -> None:
        """
        An unknown plain key in a rule is refused with the rule's keys.
        """
        self.assertError(
            '[[rule]]\nname = "x"\neffect = "deny"\nmesage = "hi"\n',
            'policies/db.toml: rule[0] ("x").mesage: unknown key; expected one of '
            f'{RULE_KEY_LIST} or a condition such as "sql.statements"; did you mean "message"?',
        )

    def test_missingName(self) -> None:
        """
        A rule without a name is refused by index.
        """
        self.assertError(
            '[[rule]]\neffect = "deny"\n',
            "policies/db.toml: rule[0].name: required; expected a string naming it",
        )

    def test_badName(self) -> None:
        """
        A rule name with spaces is refused.
        """
        self.assertError(
            '[[rule]]\nname = "no drops"\neffect = "deny"\n',
            'policies/db.toml: rule[0].name: expected letters, digits and "_.:@/-", '
            'starting with a letter or digit, at most 100 characters, got "no drops"',
        )

    def test_missingEffect(self) -> None:
        """
        A rule without an effect is refused.
        """
        self.assertError(
            '[[rule]]\nname = "x"\n',
            'policies/db.toml: rule[0] ("x").effect: required; '
            'expected one of "allow", "deny", "review"',
        )

    def test_badEffect(self) -> None:
        """
        An effect other than allow, deny and review is refused.
        """
        self.assertError(
            '[[rule]]\nname = "x"\neffect = "permit"\n',
            'policies/db.toml: rule[0] ("x").effect: '
            'expected one of "allow", "deny", "review", got "permit"',
        )

    def test_wrongTypes(self) -> None:
        """
        Wrong value types are refused with the key (and list index) and the
        expected type.
        """
        head = '[[rule]]\nname = "x"\neffect = "deny"\n'
        where = 'policies/db.toml: rule[0] ("x")'
        self.assertError(head + 'groups = "dev"\n',
                         f'{where}.groups: expected an array of strings, got a string; '
                         'write ["dev"]')
        self.assertError(head + "connections = 3\n",
                         f"{where}.connections: expected an array of strings, got an integer")
        self.assertError(head + 'actions = ["sql.*", 2]\n',
                         f"{where}.actions[1]: expected a string, got an integer")
        self.assertError(head + "users = []\n",
                         f"{where}.users: expected a non-empty array of strings "
                         "(an empty one would never match)")
        self.assertError(head + "message = true\n",
                         f"{where}.message: expected a string, got a boolean")
        self.assertError(head + 'sql.without_where = "yes"\n',
                         f"{where}.sql.without_where: expected true or false, got a string")
        self.assertError(head + "sql.statements = { drop = true }\n",
                         f"{where}.sql.statements: expected an array of strings, got a table")

    def test_case(self) -> None:
        """
        Statement kinds and k8s verbs must be lower-case and HTTP methods
        upper-case, since other values could never match.
        """
        head = '[[rule]]\nname = "x"\neffect = "deny"\n'
        where = 'policies/db.toml: rule[0] ("x")'
        self.assertError(head + 'sql.statements = ["drop", "TRUNCATE"]\n',
                         f'{where}.sql.statements[1]: expected lower-case values, got "TRUNCATE"')
        self.assertError(head + 'k8s.verbs = ["Delete"]\n',
                         f'{where}.k8s.verbs[0]: expected lower-case values, got "Delete"')
        self.assertError(head + 'http.methods = ["post"]\n',
                         f'{where}.http.methods[0]: expected upper-case values, got "post"')

    def test_groupPattern(self) -> None:
        """
        Group names are exact: a pattern other than "*" is refused.
        """
        self.assertError(
            '[[rule]]\nname = "x"\neffect = "allow"\ngroups = ["dev-*"]\n',
            'policies/db.toml: rule[0] ("x").groups[0]: expected a group name or "*" '
            '(group names are matched exactly, not as patterns), got "dev-*"',
        )

    def test_reviewKeysOnNonReviewRule(self) -> None:
        """
        review.* keys on a rule whose effect is not review are refused.
        """
        self.assertError(
            '[[rule]]\nname = "x"\neffect = "deny"\nreview.approvers = ["group:dba"]\n',
            'policies/db.toml: rule[0] ("x").review.approvers: only a review rule may have '
            'review settings; this rule\'s effect is "deny"',
        )

    def test_reviewWithoutApprovers(self) -> None:
        """
        A review rule without approvers is refused.
        """
        self.assertError(
            '[[rule]]\nname = "x"\neffect = "review"\nreview.timeout = "5m"\n',
            'policies/db.toml: rule[0] ("x").review.approvers: required for a review rule; '
            'expected an array such as ["group:dba", "user:alice"]',
        )

    def test_reviewErrors(self) -> None:
        """
        Malformed approvers, approval counts and durations are refused.
        """
        head = '[[rule]]\nname = "x"\neffect = "review"\n'
        where = 'policies/db.toml: rule[0] ("x").review'
        approvers = 'review.approvers = ["group:dba"]\n'
        self.assertError(head + 'review.approvers = ["dba"]\n',
                         f'{where}.approvers[0]: expected "group:NAME" or "user:SUBJECT", '
                         'got "dba"')
        self.assertError(head + approvers + "review.min_approvals = 0\n",
                         f"{where}.min_approvals: expected an integer of at least 1, got 0")
        self.assertError(head + approvers + 'review.min_approvals = "2"\n',
                         f"{where}.min_approvals: expected an integer of at least 1, got a string")
        self.assertError(head + 'review.approvers = ["user:a", "user:b"]\n'
                         "review.min_approvals = 3\n",
                         f"{where}.min_approvals: expected at most 2 (the number of users "
                         "listed as approvers), got 3")
        self.assertError(head + approvers + 'review.timeout = "10 minutes"\n',
                         f'{where}.timeout: expected a duration such as "30s", "15m", "2h", '
                         '"1d" or "1h30m", got "10 minutes"')
        self.assertError(head + approvers + "review.timeout = 600\n",
                         f'{where}.timeout: expected a duration such as "30s", "15m", "2h", '
                         '"1d" or "1h30m", got an integer')
        self.assertError(head + approvers + 'review.timeout = "0s"\n',
                         f'{where}.timeout: expected a duration of at least one second, got "0s"')
        self.assertError(head + approvers + 'review.approver = ["user:a"]\n',
                         f'{where}.approver: unknown key; expected one of "approvers", '
                         '"min_approvals", "timeout", "webhook"; did you mean "approvers"?')

    def test_reviewWebhook(self) -> None:
        """
        review.webhook is an http(s) URL, kept by the rule's requirement and
        by the decision of every action the rule holds, alone or with
        other review rules (each one's webhook).
        """
        text = (
            '[[rule]]\nname = "allow"\neffect = "allow"\n'
            '[[rule]]\nname = "r"\neffect = "review"\nreview.approvers = ["group:dba"]\n'
            'review.webhook = "https://hooks.example/services/T0/B0/x"\n'
            '[[rule]]\nname = "deletes"\neffect = "review"\nactions = ["sql.delete"]\n'
            '[rule.review]\napprovers = ["group:sre"]\nwebhook = "http://127.0.0.1:8080/hook"\n'
        )
        rules, _ = parse(text)
        self.assertEqual(rules[1].review.webhooks, ("https://hooks.example/services/T0/B0/x",))
        policy = build_policy_set([("policies/db.toml", text.encode())])
        alice = Identity("test", "alice", ("dev",))
        self.assertEqual(evaluate(policy, alice, "db", Action("sql.select")).review.webhooks,
                         ("https://hooks.example/services/T0/B0/x",))
        both = evaluate(policy, alice, "db", Action("sql.delete")).review
        self.assertEqual((both.rules, both.webhooks),
                         (("r", "deletes"), ("https://hooks.example/services/T0/B0/x", "http://127.0.0.1:8080/hook")))

    def test_reviewWebhookErrors(self) -> None:
        """A webhook that is not an absolute http(s) URL, or carries credentials, is refused."""
        head = '[[rule]]\nname = "x"\neffect = "review"\nreview.approvers = ["group:dba"]\n'
        where = 'policies/db.toml: rule[0] ("x").review.webhook'
        self.assertError(head + "review.webhook = 1\n", f"{where}: expected a string, got an integer")
        self.assertError(head + 'review.webhook = "hooks.example/x"\n',
                         f'{where}: expected an absolute https or http URL, got "hooks.example/x"')
        self.assertError(head + 'review.webhook = "ftp://hooks.example/x"\n',
                         f'{where}: expected an absolute https or http URL, got "ftp://hooks.example/x"')
        self.assertError(head + 'review.webhook = "https://hooks.example/x?token=1"\n',
                         f"{where}: expected an absolute https or http URL without user info, query or "
                         "fragment, got a URL with them")
        self.assertError(
            '[[rule]]\nname = "x"\neffect = "allow"\nreview.webhook = "https://hooks.example/x"\n',
            'policies/db.toml: rule[0] ("x").review.webhook: only a review rule may have review settings; '
            "this rule's effect is \"allow\"",
        )

    def test_maskErrors(self) -> None:
        """
        Unknown mask keys, detectors and strategies, malformed column
        patterns and a mask that masks nothing are refused.
        """
        head = '[[mask]]\nname = "pii"\n'
        where = 'policies/db.toml: mask[0] ("pii")'
        self.assertError(head + 'detectors = ["passport"]\n',
                         f'{where}.detectors[0]: expected one of "aws_key", "card", "email", '
                         '"iban", "ipv4", "jwt", "phone", "private_key", "ssn", got "passport"')
        self.assertError(head + 'columns = ["users.ssn"]\n',
                         f'{where}.columns[0]: expected a "schema.table.column" pattern, '
                         'got "users.ssn"')
        self.assertError(head + 'detectors = ["ssn"]\nstrategy = "blur"\n',
                         f'{where}.strategy: expected one of "hash", "null", "partial", '
                         '"redact", got "blur"')
        self.assertError(head + 'strategy = "hash"\n',
                         f"{where}: expected columns, detectors, patterns, json_paths, kinds or "
                         "several: a mask must say what it masks")
        self.assertError(head + 'detectors = ["ssn"]\nexcept_group = ["a"]\n',
                         f'{where}.except_group: unknown key; expected one of "columns", '
                         '"connections", "detectors", "except_groups", "groups", "json_paths", "kinds", '
                         '"name", "patterns", "strategy", "users"; did you mean "except_groups"?')
        self.assertError(head + 'patterns = ["(a+)+"]\n',
                         f"{where}.patterns[0]: expected a regular expression that is safe to run "
                         "on every value: it can backtrack catastrophically (a repeat inside a repeat)")
        self.assertError(head + 'patterns = ["x*"]\n',
                         f"{where}.patterns[0]: expected a regular expression that is safe to run "
                         "on every value: it can match the empty string")
        self.assertError(head + 'detectors = ["ssn"]\ngroups = ["dev*"]\n',
                         f'{where}.groups[0]: expected a group name or "*" (group names are matched '
                         'exactly, not as patterns), got "dev*"')
        self.assertError(head + 'detectors = ["ssn"]\nexcept_groups = ["*"]\n',
                         f'{where}.except_groups: expected group names; "*" would exempt '
                         "everyone (remove the mask instead)")
        self.assertError(head + 'json_paths = ["data[?(@.x)]"]\n',
                         f'{where}.json_paths[0]: expected a JSON path such as "data.*" or '
                         '"$.spec.containers[*].env[*].value": expected [\'name\'], [*] or [N] at offset 5 '
                         "(filters and slices are not supported)")
        self.assertError(head + 'json_paths = ["$"]\n',
                         f'{where}.json_paths[0]: expected a JSON path such as "data.*" or '
                         '"$.spec.containers[*].env[*].value": the path names the whole document; '
                         "name the values to mask")
        self.assertError(head + 'kinds = ["secret"]\n',
                         f'{where}.kinds[0]: expected a Kubernetes kind such as "Secret", got "secret"')
        self.assertError(head + 'kinds = ["Pod"]\n',
                         f"{where}.kinds[0]: expected json_paths too: which values of a Pod to mask is "
                         'known only for "ConfigMap" and "Secret"')

    def test_topLevel(self) -> None:
        """
        Top-level keys other than rule and mask are refused, and so is a
        [rule] table where an array of tables ([[rule]]) is expected.
        """
        self.assertError('[[rules]]\nname = "x"\n',
                         'policies/db.toml: rules: unknown key; expected "rule" ([[rule]] '
                         'tables), "mask" ([[mask]] tables) or "grant" ([[grant]] tables); did you mean "rule"?')
        self.assertError('[rule]\nname = "x"\n',
                         "policies/db.toml: rule: expected an array of tables ([[rule]]), "
                         "got a table")
        self.assertError("rule = [1]\n",
                         "policies/db.toml: rule[0]: expected a table ([[rule]]), got an integer")

    def test_notToml(self) -> None:
        """
        A file that is not TOML, or not UTF-8, is refused with the reason.
        """
        self.assertError("[[rule]\n",
                         "policies/db.toml: expected valid TOML: "
                         "Expected ']]' at the end of an array declaration (at line 1, column 7)")
        error = self.assertRaises(ConfigError, parse_policy_file, b"\xff", file="p.toml")
        self.assertEqual(str(error), "p.toml: expected UTF-8 text, got an invalid byte at offset 0")


class BuildTests(SynchronousTestCase):
    def test_files(self) -> None:
        """
        A policy set holds every file's rules and masks in order, and, per
        file, its path, the SHA-256 of its bytes and its counts.
        """
        a = b'[[rule]]\nname = "a"\neffect = "allow"\n[[mask]]\nname = "m"\ndetectors = ["jwt"]\n'
        b = b'[[rule]]\nname = "b"\neffect = "deny"\n[[rule]]\nname = "c"\neffect = "deny"\n'
        p = build_policy_set([("p/a.toml", a), ("p/b.toml", b)])
        self.assertEqual([r.name for r in p.rules], ["a", "b", "c"])
        self.assertEqual([m.name for m in p.masks], ["m"])
        self.assertEqual(p.files, (
            PolicyFile("p/a.toml", hashlib.sha256(a).hexdigest(), 1, 1),
            PolicyFile("p/b.toml", hashlib.sha256(b).hexdigest(), 2, 0),
        ))
        self.assertEqual(p.files[0].to_record(), {
            "path": "p/a.toml", "sha256": hashlib.sha256(a).hexdigest(), "rules": 1, "masks": 1,
        })

    def test_duplicateRuleAcrossFiles(self) -> None:
        """
        A rule name used in two files is refused, naming both places.
        """
        a = b'[[rule]]\nname = "x"\neffect = "allow"\n'
        b = b'[[rule]]\nname = "y"\neffect = "deny"\n[[rule]]\nname = "x"\neffect = "deny"\n'
        error = self.assertRaises(ConfigError, build_policy_set, [("p/a.toml", a), ("p/b.toml", b)])
        self.assertEqual(
            str(error),
            'p/b.toml: rule[1] ("x").name: duplicate rule name; expected a name not used '
            "elsewhere, already used by p/a.toml: rule[0]",
        )

    def test_duplicateRuleInFile(self) -> None:
        """
        A rule name used twice in one file is refused too.
        """
        a = b'[[rule]]\nname = "x"\neffect = "allow"\n[[rule]]\nname = "x"\neffect = "deny"\n'
        error = self.assertRaises(ConfigError, build_policy_set, [("p/a.toml", a)])
        self.assertEqual(
            str(error),
            'p/a.toml: rule[1] ("x").name: duplicate rule name; expected a name not used '
            "elsewhere, already used by p/a.toml: rule[0]",
        )

    def test_duplicateMask(self) -> None:
        """
        A mask name used twice is refused.
        """
        m = b'[[mask]]\nname = "m"\ndetectors = ["jwt"]\n'
        error = self.assertRaises(ConfigError, build_policy_set, [("a.toml", m), ("b.toml", m)])
        self.assertEqual(
            str(error),
            'b.toml: mask[0] ("m").name: duplicate mask name; expected a name not used '
            "elsewhere, already used by a.toml: mask[0]",
        )


class DirectoryTests(SynchronousTestCase):
    def folder(self) -> Path:
        path = Path(self.mktemp())
        path.mkdir()
        return path

    def test_loadsTopLevelTomlSorted(self) -> None:
        """
        Every *.toml file directly in the folder is loaded, sorted by name;
        other files, hidden files and subfolders are not.
        """
        path = self.folder()
        (path / "b.toml").write_text('[[rule]]\nname = "b"\neffect = "deny"\n')
        (path / "a.toml").write_text('[[rule]]\nname = "a"\neffect = "allow"\n')
        (path / "notes.txt").write_text("not toml")
        (path / ".#a.toml").write_text("broken [[")
        (path / "sub").mkdir()
        (path / "sub" / "c.toml").write_text('[[rule]]\nname = "c"\neffect = "allow"\n')
        (path / "dir.toml").mkdir()
        p = load_policy_dir(path)
        self.assertEqual([r.name for r in p.rules], ["a", "b"])
        self.assertEqual([f.path for f in p.files], [str(path / "a.toml"), str(path / "b.toml")])
        self.assertEqual(p.rules[1].source, str(path / "b.toml"))

    def test_missing(self) -> None:
        """
        A missing folder is refused.
        """
        path = Path(self.mktemp())
        error = self.assertRaises(ConfigError, load_policy_dir, path)
        self.assertEqual(
            str(error), f"{path}: policy folder not found; expected a folder of *.toml files"
        )

    def test_notAFolder(self) -> None:
        """
        A file where a folder is expected is refused.
        """
        path = Path(self.mktemp())
        path.write_text("")
        error = self.assertRaises(ConfigError, load_policy_dir, path)
        self.assertEqual(str(error), f"{path}: expected a folder of *.toml policy files, found a file")

    def test_empty(self) -> None:
        """
        A folder without policy files is refused: it would deny everything.
        """
        path = self.folder()
        (path / "README.md").write_text("")
        error = self.assertRaises(ConfigError, load_policy_dir, path)
        self.assertEqual(
            str(error),
            f"{path}: no *.toml policy files; expected at least one "
            "(with no rule, nothing is allowed)",
        )

    def test_errorNamesFile(self) -> None:
        """
        An error in one file names that file's path.
        """
        path = self.folder()
        (path / "a.toml").write_text('[[rule]]\nname = "a"\neffect = "allow"\n')
        (path / "db.toml").write_text('[[rule]]\nname = "x"\neffect = "nope"\n')
        error = self.assertRaises(ConfigError, load_policy_dir, path)
        self.assertEqual(error.file, str(path / "db.toml"))
        self.assertEqual(error.key, 'rule[0] ("x").effect')


ALICE = Identity("https://idp", "alice", groups=("dev",))
BOB_DBA = Identity("https://idp", "bob", groups=("dba",))


def sql(*statements: str, **attributes: object) -> Action:
    attrs = {"sql.statements": statements}
    attrs.update({f"sql.{k}": v for k, v in attributes.items()})
    return Action("sql.query", "", attrs)


class ShippedPolicyTests(SynchronousTestCase):
    def test_defaultLoads(self) -> None:
        """
        The shipped default policy loads and has its documented rules.
        """
        p = load_policy_dir(REPO / "policies")
        self.assertEqual(
            [r.name for r in p.rules],
            ["authenticated-may-use-everything", "no-destructive-ddl", "no-unbounded-writes",
             "no-copy-program", "no-schema-renames", "no-do-blocks", "no-unknown-statements", "review-payment-writes", "no-rm-rf", "no-power-control", "no-port-forwarding",
             "no-namespace-delete", "no-node-proxy"],
        )

    def test_defaultBehaviour(self) -> None:
        """
        The default policy allows ordinary work by any identity and stops
        the guardrail cases.
        """
        p = load_policy_dir(REPO / "policies")
        nobody = Identity("https://idp", "carol")

        def rule(action: Action, who: Identity = ALICE) -> tuple[str, str | None]:
            d = evaluate(p, who, "appdb", action)
            return d.effect.value, d.rule

        self.assertEqual(rule(Action("session.open"), nobody),
                         ("allow", "authenticated-may-use-everything"))
        self.assertEqual(rule(sql("select", reads=("public.users",))),
                         ("allow", "authenticated-may-use-everything"))
        # An EXECUTE of a statement the gateway never saw prepared, unparsable text.
        self.assertEqual(rule(sql("execute", "unknown")), ("deny", "no-unknown-statements"))
        self.assertEqual(rule(sql("drop")), ("deny", "no-destructive-ddl"))
        self.assertEqual(rule(sql("select", "truncate")), ("deny", "no-destructive-ddl"))
        self.assertEqual(rule(sql("delete", without_where=True)), ("deny", "no-unbounded-writes"))
        self.assertEqual(rule(sql("delete", without_where=False)),
                         ("allow", "authenticated-may-use-everything"))
        self.assertEqual(rule(sql("update", writes=("public.payments",), without_where=False)),
                         ("review", "review-payment-writes"))
        self.assertEqual(rule(Action("ssh.exec", "", {"ssh.commands": ("rm -rf /",)})),
                         ("deny", "no-rm-rf"))
        self.assertEqual(rule(Action("ssh.shell.line", "", {"ssh.commands": ("sudo reboot",)})),
                         ("deny", "no-power-control"))
        self.assertEqual(rule(Action("ssh.exec", "", {"ssh.commands": ("rm -r build",)})),
                         ("allow", "authenticated-may-use-everything"))
        forward = Action("ssh.forward", "", {"ssh.forward.destinations": ("127.0.0.1:5432",)})
        self.assertEqual(rule(forward), ("deny", "no-port-forwarding"))
        delete_ns = Action("k8s.delete", "", {"k8s.verbs": ("delete",),
                                              "k8s.resources": ("namespaces",)})
        self.assertEqual(rule(delete_ns), ("deny", "no-namespace-delete"))
        delete_pod = Action("k8s.delete", "", {"k8s.verbs": ("delete",), "k8s.resources": ("pods",)})
        self.assertEqual(rule(delete_pod), ("allow", "authenticated-may-use-everything"))

    def test_examplesLoad(self) -> None:
        """
        Every example policy loads on its own.
        """
        folder = REPO / "policies" / "examples"
        for file in sorted(folder.glob("*.toml")):
            parse_policy_file(file.read_bytes(), file=str(file))
        p = load_policy_dir(folder)
        self.assertTrue(p.rules)
        self.assertTrue(p.masks)

    def test_productionBehaviour(self) -> None:
        """
        In the production example, developers read production databases but
        do not write them; a DBA's write waits for review; a payment write
        needs both reviews.
        """
        p = load_policy_dir(REPO / "policies" / "examples")

        def decide(who: Identity, connection: str, action: Action) -> tuple[str, str | None]:
            d = evaluate(p, who, connection, action)
            return d.effect.value, d.rule

        self.assertEqual(decide(ALICE, "prod-appdb", Action("session.open")),
                         ("allow", "dev-opens-prod-db"))
        self.assertEqual(decide(ALICE, "prod-appdb", sql("select")),
                         ("allow", "dev-reads-prod-db"))
        self.assertEqual(decide(ALICE, "prod-appdb", sql("insert", writes=("public.t",))),
                         ("deny", None))
        self.assertEqual(decide(BOB_DBA, "prod-appdb", sql("insert", writes=("public.t",))),
                         ("review", "review-prod-writes"))
        d = evaluate(p, BOB_DBA, "prod-appdb", sql("insert", writes=("public.payments",)))
        self.assertEqual(d.review.rules, ("review-prod-writes", "review-payment-writes"))
        self.assertEqual(decide(BOB_DBA, "prod-appdb", sql("drop")),
                         ("deny", "no-destructive-ddl-on-prod"))
        self.assertEqual(decide(ALICE, "dev-appdb", sql("drop")), ("allow", "dev-on-nonprod"))

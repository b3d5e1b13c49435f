"""
Tests for L{hoopgw.policy.rules}: rule matching and evaluation.
"""

from __future__ import annotations

import fnmatch

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.model import Action, Decision, Effect, Identity
from hoopgw.policy import (
    CONDITIONS,
    ConditionKind,
    PolicySet,
    ReviewRequirement,
    Rule,
    build_policy_set,
    compile_globs,
    evaluate,
    register_condition,
)
from hoopgw.policy.rules import Condition, MaskRule


def policy(text: str) -> PolicySet:
    return build_policy_set([("test.toml", text.encode("utf-8"))])


def who(subject: str = "alice", *groups: str) -> Identity:
    return Identity("https://idp.example.com", subject, groups=groups)


ALLOW_ALL = """
[[rule]]
name = "allow-all"
effect = "allow"
"""

ALICE = who("alice", "dev")
SELECT = Action("sql.query", "SELECT 1", {"sql.statements": ("select",)})


class EvaluationTests(SynchronousTestCase):
    def test_noRulesDenies(self) -> None:
        """
        If no rule matches, the action is denied with C{rule=None} and a
        message naming the action kind, the connection and the subject.
        """
        self.assertEqual(
            evaluate(PolicySet(), ALICE, "appdb", SELECT),
            Decision(Effect.deny, None, 'no rule allows "sql.query" on "appdb" for alice'),
        )

    def test_defaultsMatchEverything(self) -> None:
        """
        If an allow rule sets neither groups, connections, actions nor
        conditions, it allows any action of any authenticated identity on
        any connection, and the decision names it.
        """
        p = policy(ALLOW_ALL)
        for action in [SELECT, Action("ssh.exec", "ls"), Action("session.open")]:
            self.assertEqual(
                evaluate(p, who("bob"), "anything", action),
                Decision(Effect.allow, "allow-all", ""),
            )

    def test_groups(self) -> None:
        """
        If a rule lists groups, it matches an identity in any of them, and
        not one in none of them; C{"*"} matches an identity with no group.
        """
        p = policy(
            """
            [[rule]]
            name = "devs"
            effect = "allow"
            groups = ["dev", "dba"]
            """
        )
        self.assertEqual(evaluate(p, who("a", "x", "dba"), "c", SELECT).rule, "devs")
        self.assertIsNone(evaluate(p, who("b", "ops"), "c", SELECT).rule)
        self.assertIsNone(evaluate(p, who("c"), "c", SELECT).rule)
        star = policy('[[rule]]\nname = "any"\neffect = "allow"\ngroups = ["*"]\n')
        self.assertEqual(evaluate(star, who("c"), "c", SELECT).rule, "any")

    def test_users(self) -> None:
        """
        If a rule lists users, it matches identities whose subject matches
        one of the patterns.
        """
        p = policy('[[rule]]\nname = "ci"\neffect = "allow"\nusers = ["svc-*@example.com"]\n')
        self.assertTrue(evaluate(p, who("svc-ci@example.com"), "c", SELECT).allowed)
        self.assertFalse(evaluate(p, who("alice@example.com"), "c", SELECT).allowed)

    def test_connectionAndActionGlobs(self) -> None:
        """
        Connections and actions are matched as case-sensitive globs on the
        whole connection name and action kind.
        """
        p = policy(
            """
            [[rule]]
            name = "r"
            effect = "allow"
            connections = ["prod-*", "appdb"]
            actions = ["sql.*", "session.open"]
            """
        )
        self.assertTrue(evaluate(p, ALICE, "prod-db1", SELECT).allowed)
        self.assertTrue(evaluate(p, ALICE, "appdb", Action("session.open")).allowed)
        self.assertFalse(evaluate(p, ALICE, "appdb2", SELECT).allowed)
        self.assertFalse(evaluate(p, ALICE, "PROD-db1", SELECT).allowed)
        self.assertFalse(evaluate(p, ALICE, "appdb", Action("ssh.exec")).allowed)
        self.assertFalse(evaluate(p, ALICE, "appdb", Action("session.openx")).allowed)

    def test_denyBeatsReviewBeatsAllow(self) -> None:
        """
        If allow, review and deny rules all match, deny decides; without the
        deny, review decides; without both, allow decides.  The order of
        the rules in the file does not matter.
        """
        rules = {
            "allow": '[[rule]]\nname = "a"\neffect = "allow"\n',
            "review": '[[rule]]\nname = "r"\neffect = "review"\n'
            'review.approvers = ["group:dba"]\n',
            "deny": '[[rule]]\nname = "d"\neffect = "deny"\nmessage = "no"\n',
        }
        for order in (["allow", "review", "deny"], ["deny", "review", "allow"],
                      ["review", "deny", "allow"]):
            p = policy("".join(rules[k] for k in order))
            self.assertEqual(evaluate(p, ALICE, "c", SELECT), Decision(Effect.deny, "d", "no"))
            without_deny = policy("".join(rules[k] for k in order if k != "deny"))
            decision = evaluate(without_deny, ALICE, "c", SELECT)
            self.assertEqual((decision.effect, decision.rule), (Effect.review, "r"))
            self.assertEqual(
                decision.review,
                ReviewRequirement(("group:dba",), 1, 600, rules=("r",)),
            )
            self.assertEqual(
                evaluate(policy(rules["allow"]), ALICE, "c", SELECT),
                Decision(Effect.allow, "a", ""),
            )

    def test_reviewWithoutAllowDenies(self) -> None:
        """
        If a review rule matches but no allow rule does, the action is
        denied: a review rule gates access, it never grants it.
        """
        p = policy(
            '[[rule]]\nname = "r"\neffect = "review"\nreview.approvers = ["user:bob"]\n'
        )
        self.assertEqual(
            evaluate(p, ALICE, "appdb", SELECT),
            Decision(Effect.deny, None, 'no rule allows "sql.query" on "appdb" for alice'),
        )

    def test_firstDenyNamed(self) -> None:
        """
        If several deny rules match, the first in load order decides, with
        its message, or a default message naming it.
        """
        p = policy(
            ALLOW_ALL
            + '[[rule]]\nname = "d1"\neffect = "deny"\n'
            + '[[rule]]\nname = "d2"\neffect = "deny"\nmessage = "two"\n'
        )
        self.assertEqual(
            evaluate(p, ALICE, "c", SELECT),
            Decision(Effect.deny, "d1", 'denied by policy rule "d1"'),
        )

    def test_severalReviewsCombine(self) -> None:
        """
        If several review rules match, the decision names the first, joins
        their messages, and requires each rule's approvals on its own: the
        union of approvers, the largest count and the shortest timeout
        summarise it.
        """
        p = policy(
            ALLOW_ALL
            + """
            [[rule]]
            name = "r1"
            effect = "review"
            review.approvers = ["group:dba"]
            review.min_approvals = 2
            review.timeout = "1h"
            message = "dba"

            [[rule]]
            name = "r2"
            effect = "review"
            review.approvers = ["group:finance", "user:cfo"]
            review.timeout = "5m"
            message = "finance"
            """
        )
        decision = evaluate(p, ALICE, "c", SELECT)
        self.assertEqual((decision.effect, decision.rule, decision.message),
                         (Effect.review, "r1", "dba; finance"))
        r1 = ReviewRequirement(("group:dba",), 2, 3600, rules=("r1",))
        r2 = ReviewRequirement(("group:finance", "user:cfo"), 1, 300, rules=("r2",))
        self.assertEqual(
            decision.review,
            ReviewRequirement(
                ("group:dba", "group:finance", "user:cfo"), 2, 300,
                rules=("r1", "r2"), all_of=(r1, r2),
            ),
        )
        # The same combination is handed out again, not rebuilt.
        self.assertIs(evaluate(p, ALICE, "c", SELECT), decision)

    def test_listConditionAnyValueAnyPattern(self) -> None:
        """
        A glob condition matches when any value of the attribute matches any
        pattern; a single string value is one value.
        """
        p = policy(ALLOW_ALL + '[[rule]]\nname = "d"\neffect = "deny"\n'
                   'sql.writes = ["public.pay*", "audit.*"]\n')

        def decide(writes: object) -> str | None:
            return evaluate(p, ALICE, "c", Action("sql.query", "", {"sql.writes": writes})).rule

        self.assertEqual(decide(("public.users", "audit.log")), "d")
        self.assertEqual(decide(["public.payments"]), "d")
        self.assertEqual(decide("public.payments"), "d")
        self.assertEqual(decide(("public.users",)), "allow-all")
        self.assertEqual(decide(()), "allow-all")
        self.assertEqual(decide(("PUBLIC.PAYMENTS",)), "allow-all")

    def test_conditionAbsentDoesNotMatch(self) -> None:
        """
        If an action does not carry a condition's attribute, the rule does
        not match: an sql.* condition never catches an SSH action, not even
        with the pattern "*".
        """
        p = policy(ALLOW_ALL + '[[rule]]\nname = "d"\neffect = "deny"\n'
                   'sql.statements = ["*"]\n')
        self.assertEqual(evaluate(p, ALICE, "c", Action("ssh.exec", "ls")).rule, "allow-all")
        self.assertEqual(
            evaluate(p, ALICE, "c", Action("ssh.exec", "ls", {"ssh.commands": ("ls",)})).rule,
            "allow-all",
        )
        self.assertEqual(evaluate(p, ALICE, "c", SELECT).rule, "d")

    def test_allConditionsMustMatch(self) -> None:
        """
        A rule with several conditions matches only when every one does;
        a boolean condition matches the boolean only (not 1 or "true").
        """
        p = policy(ALLOW_ALL + '[[rule]]\nname = "d"\neffect = "deny"\n'
                   'sql.statements = ["delete", "update"]\nsql.without_where = true\n')

        def decide(statements: tuple[str, ...], without_where: object) -> str | None:
            attributes = {"sql.statements": statements, "sql.without_where": without_where}
            return evaluate(p, ALICE, "c", Action("sql.query", "", attributes)).rule

        self.assertEqual(decide(("delete",), True), "d")
        self.assertEqual(decide(("update",), False), "allow-all")
        self.assertEqual(decide(("select",), True), "allow-all")
        self.assertEqual(decide(("delete",), 1), "allow-all")
        self.assertEqual(decide(("delete",), "true"), "allow-all")

    def test_falseCondition(self) -> None:
        """
        A boolean condition set to false matches actions whose attribute is
        false, not those without the attribute.
        """
        p = policy(ALLOW_ALL + '[[rule]]\nname = "d"\neffect = "deny"\n'
                   'sql.without_where = false\n')
        self.assertEqual(
            evaluate(p, ALICE, "c", Action("sql.query", "", {"sql.without_where": False})).rule,
            "d",
        )
        self.assertEqual(evaluate(p, ALICE, "c", Action("sql.query")).rule, "allow-all")

    def test_nonStringValuesDoNotMatch(self) -> None:
        """
        Attribute values that are not strings (a front end's bug) do not
        match a glob condition, and do not raise.
        """
        p = policy(ALLOW_ALL + '[[rule]]\nname = "d"\neffect = "deny"\n'
                   'ssh.commands = ["*"]\n')
        for value in (None, 3, (3, None), {"a": 1}, b"rm"):
            action = Action("ssh.exec", "", {"ssh.commands": value})
            self.assertEqual(evaluate(p, ALICE, "c", action).rule, "allow-all")

    def test_ruleInCodeNeedsReviewIffReviewEffect(self) -> None:
        """
        A L{Rule} built in code refuses a review requirement on a non-review
        rule and a review rule without one.
        """
        self.assertRaises(ValueError, Rule, "r", Effect.review)
        self.assertRaises(
            ValueError, Rule, "r", Effect.allow, review=ReviewRequirement(("user:bob",))
        )

    def test_rulesBuiltInCode(self) -> None:
        """
        A L{PolicySet} built from L{Rule} values evaluates like a loaded one.
        """
        p = PolicySet([
            Rule("a", Effect.allow, groups=["dev"]),
            Rule("d", "deny", conditions=[Condition("k8s.resources", ("namespaces",))]),
        ])
        action = Action("k8s.delete", "", {"k8s.resources": ("namespaces",)})
        self.assertEqual(evaluate(p, ALICE, "k8s", action).rule, "d")
        self.assertEqual(p.evaluate(ALICE, "k8s", Action("k8s.get")).rule, "a")
        self.assertIs(p.rule("a"), p.rules[0])
        self.assertIsNone(p.rule("zzz"))


class ReviewRequirementTests(SynchronousTestCase):
    def test_satisfiedBy(self) -> None:
        """
        A requirement is satisfied by at least min_approvals distinct
        approvers that match a "group:" or "user:" entry; the same identity
        twice counts once.
        """
        r = ReviewRequirement(("group:dba", "user:carol"), min_approvals=2)
        bob, dan, carol = who("bob", "dba"), who("dan", "dba"), who("carol")
        eve = who("eve", "dev")
        self.assertTrue(r.satisfied_by([bob, carol]))
        self.assertTrue(r.satisfied_by([bob, dan]))
        self.assertFalse(r.satisfied_by([bob, bob]))
        self.assertFalse(r.satisfied_by([bob, eve]))
        self.assertTrue(r.may_approve(carol))
        self.assertFalse(r.may_approve(eve))

    def test_combinedNeedsEveryPart(self) -> None:
        """
        A combined requirement is satisfied only when each part is: one
        approver who matches both parts satisfies both.
        """
        combined = ReviewRequirement.combine([
            ReviewRequirement(("group:dba",), rules=("a",)),
            ReviewRequirement(("group:finance",), rules=("b",)),
        ])
        dba, fin, both = who("d", "dba"), who("f", "finance"), who("x", "dba", "finance")
        self.assertFalse(combined.satisfied_by([dba]))
        self.assertFalse(combined.satisfied_by([fin]))
        self.assertTrue(combined.satisfied_by([dba, fin]))
        self.assertTrue(combined.satisfied_by([both]))
        self.assertTrue(combined.may_approve(fin))

    def test_combineOne(self) -> None:
        """
        Combining a single requirement gives it back unchanged.
        """
        r = ReviewRequirement(("user:bob",), rules=("a",))
        self.assertIs(ReviewRequirement.combine([r]), r)

    def test_invalid(self) -> None:
        """
        A requirement refuses no approvers, malformed approvers, fewer than
        one approval and a non-positive timeout.
        """
        self.assertRaises(ValueError, ReviewRequirement, ())
        self.assertRaises(ValueError, ReviewRequirement, ("dba",))
        self.assertRaises(ValueError, ReviewRequirement, ("group:",))
        self.assertRaises(ValueError, ReviewRequirement, ("user:a",), min_approvals=0)
        self.assertRaises(ValueError, ReviewRequirement, ("user:a",), timeout_seconds=0)


class GlobTests(SynchronousTestCase):
    def test_star(self) -> None:
        """
        A pattern list containing "*" compiles to None: no test needed.
        """
        self.assertIsNone(compile_globs(["a", "*"]))

    def test_literalsAndPatterns(self) -> None:
        """
        Literal patterns match exactly; wildcard patterns match the whole
        string, case-sensitively, as fnmatchcase does.
        """
        literal = compile_globs(["drop", "truncate"])
        assert literal is not None
        self.assertTrue(literal("drop"))
        self.assertFalse(literal("DROP"))
        self.assertFalse(literal("drops"))
        mixed = compile_globs(["rm -rf *", "shutdown?", "x[ab]"])
        assert mixed is not None
        self.assertTrue(mixed("rm -rf /"))
        self.assertTrue(mixed("shutdownX"))
        self.assertTrue(mixed("xb"))
        self.assertFalse(mixed("xrm -rf /"))
        self.assertFalse(mixed("shutdown now"))
        self.assertFalse(mixed("RM -RF /"))
        self.assertFalse(mixed("xc"))

    @given(
        st.lists(st.text(alphabet="ab*?[]!.-", max_size=6), min_size=1, max_size=4),
        st.text(alphabet="ab.-[]", max_size=8),
    )
    @settings(max_examples=200, deadline=None)
    def test_agreesWithFnmatchcase(self, patterns: list[str], value: str) -> None:
        """
        A compiled pattern list matches exactly when fnmatchcase matches
        any of its patterns.
        """
        import fnmatch

        match = compile_globs(patterns)
        got = True if match is None else bool(match(value))
        self.assertEqual(got, any(fnmatch.fnmatchcase(value, p) for p in patterns))


class ConditionRegistryTests(SynchronousTestCase):
    def test_register(self) -> None:
        """
        A registered condition can be used in rules loaded with that
        vocabulary; registering it again with the same kind is harmless,
        with another kind an error.
        """
        table = dict(CONDITIONS)
        spec = register_condition("mysql.statements", "globs", conditions=table)
        self.assertIs(register_condition("mysql.statements", ConditionKind.globs,
                                         conditions=table), spec)
        self.assertRaises(ValueError, register_condition, "mysql.statements", "bool",
                          conditions=table)
        self.assertNotIn("mysql.statements", CONDITIONS)
        p = build_policy_set(
            [("t.toml", ALLOW_ALL.encode() + b'[[rule]]\nname = "d"\neffect = "deny"\n'
              b'mysql.statements = ["drop"]\n')],
            conditions=table,
        )
        action = Action("mysql.query", "", {"mysql.statements": ("drop",)})
        self.assertEqual(evaluate(p, ALICE, "c", action).rule, "d")

    def test_badNames(self) -> None:
        """
        Condition names must be dotted lower-case words, and not in the
        review namespace; kinds and cases must be known.
        """
        table = dict(CONDITIONS)
        for name in ("statements", "Mysql.x", "mysql.", "review.x", "a b.c"):
            self.assertRaises(ValueError, register_condition, name, "globs", conditions=table)
        self.assertRaises(ValueError, register_condition, "a.b", "regex", conditions=table)
        self.assertRaises(ValueError, register_condition, "a.b", "globs", case="title",
                          conditions=table)


class MaskTests(SynchronousTestCase):
    def test_masksFor(self) -> None:
        """
        The masks for an identity on a connection are those whose
        connection patterns match, unless the identity is in one of their
        except_groups.
        """
        pii = MaskRule("pii", connections=["prod-*"], detectors=["email"],
                       except_groups=["pii-readers"])
        keys = MaskRule("keys", detectors=["aws_key"])
        p = PolicySet(masks=[pii, keys])
        self.assertEqual(p.masks_for("prod-db", ALICE), (pii, keys))
        self.assertEqual(p.masks_for("dev-db", ALICE), (keys,))
        self.assertEqual(p.masks_for("prod-db", who("bob", "pii-readers")), (keys,))


# -- properties ---------------------------------------------------------------

_names = st.sampled_from(["dev", "dba", "ops", "*", "x"])
_globs = st.lists(st.sampled_from(["*", "a*", "sql.*", "ssh.exec", "c?", "[ab]*", "", "appdb"]),
                  min_size=1, max_size=3)
_condition_names = st.sampled_from(sorted(CONDITIONS))


@st.composite
def _rules(draw: st.DrawFn) -> list[Rule]:
    rules = []
    for i in range(draw(st.integers(0, 6))):
        effect = draw(st.sampled_from(list(Effect)))
        conditions = []
        for name in draw(st.lists(_condition_names, max_size=2, unique=True)):
            if CONDITIONS[name].kind is ConditionKind.boolean:
                conditions.append(Condition(name, draw(st.booleans())))
            else:
                conditions.append(Condition(name, tuple(draw(_globs))))
        rules.append(Rule(
            f"r{i}",
            effect,
            groups=draw(st.lists(_names, min_size=1, max_size=2)),
            connections=draw(_globs),
            actions=draw(_globs),
            conditions=conditions,
            review=ReviewRequirement(("group:dba",)) if effect is Effect.review else None,
        ))
    return rules


_values = st.one_of(
    st.text(max_size=6), st.booleans(), st.none(), st.integers(),
    st.lists(st.one_of(st.text(max_size=6), st.integers()), max_size=3).map(tuple),
)
_identities = st.builds(
    Identity, st.text(max_size=5), st.text(max_size=8),
    groups=st.lists(st.one_of(_names, st.text(max_size=4)), max_size=3),
)
_actions = st.builds(
    Action,
    st.one_of(st.sampled_from(["sql.query", "ssh.exec", "session.open", "k8s.delete"]),
              st.text(max_size=8)),
    st.text(max_size=4),
    st.dictionaries(st.one_of(_condition_names, st.text(max_size=5)), _values, max_size=4),
)


class PropertyTests(SynchronousTestCase):
    @given(_rules(), _identities, st.text(max_size=6), _actions)
    @settings(max_examples=300, deadline=None)
    def test_neverRaises(self, rules: list[Rule], identity: Identity, connection: str,
                         action: Action) -> None:
        """
        Evaluation of any action by any identity returns a decision and does
        not raise; a decision without a rule is a deny.
        """
        decision = evaluate(PolicySet(rules), identity, connection, action)
        self.assertIsInstance(decision, Decision)
        if decision.rule is None:
            self.assertIs(decision.effect, Effect.deny)

    @given(_rules(), _identities, st.text(max_size=6), _actions)
    @settings(max_examples=300, deadline=None)
    def test_denyWins(self, rules: list[Rule], identity: Identity, connection: str,
                      action: Action) -> None:
        """
        If a matching deny rule exists (checked rule by rule, without the
        compiled index), the decision is that first deny; otherwise the
        decision is deny-without-rule, review or allow exactly as the
        matching rules say.
        """
        p = PolicySet(rules)
        matching = [r for r in rules if _matches(r, identity, connection, action)]
        decision = evaluate(p, identity, connection, action)
        denies = [r for r in matching if r.effect is Effect.deny]
        allows = [r for r in matching if r.effect is Effect.allow]
        reviews = [r for r in matching if r.effect is Effect.review]
        if denies:
            self.assertEqual((decision.effect, decision.rule), (Effect.deny, denies[0].name))
        elif not allows:
            self.assertEqual((decision.effect, decision.rule), (Effect.deny, None))
        elif reviews:
            self.assertEqual((decision.effect, decision.rule), (Effect.review, reviews[0].name))
        else:
            self.assertEqual((decision.effect, decision.rule), (Effect.allow, allows[0].name))


# Few values, so that actions repeat and the memo answers; 1 beside True
# and 0 beside False, which compare equal but decide differently.
_FEW = st.sampled_from(["a", "appdb", "x", 1, True, 0, False, ("a",), ("a", "x"), (1,), frozenset({"a"}), ["a"]])


class DecisionMemoTests(SynchronousTestCase):
    """
    A compiled policy keeps the decisions it made, by everything a decision
    reads; a kept decision is the one evaluating afresh gives.
    """

    @staticmethod
    @st.composite
    def _repeating(draw: st.DrawFn) -> list[tuple[Identity, str, Action]]:
        """Questions drawn from small pools: the same action asked again by another identity, on another connection."""
        identities = draw(st.lists(
            st.builds(Identity, st.just("iss"), st.sampled_from(["alice", "bob"]), groups=st.lists(_names, max_size=2)),
            min_size=1, max_size=3,
        ))
        actions = draw(st.lists(
            st.builds(Action, st.sampled_from(["sql.query", "ssh.exec"]), st.just(""),
                      st.dictionaries(_condition_names, _FEW, max_size=2)),
            min_size=1, max_size=3,
        ))
        question = st.tuples(st.sampled_from(identities), st.sampled_from(["appdb", "c1"]), st.sampled_from(actions))
        return draw(st.lists(question, min_size=2, max_size=20))

    @given(_rules(), _repeating())
    @settings(max_examples=500, deadline=None)
    def test_sameAsEvaluatingAfresh(self, rules: list[Rule], asked: list[tuple[Identity, str, Action]]) -> None:
        kept = PolicySet(rules)
        for identity, connection, action in asked:
            fresh = evaluate(PolicySet(rules), identity, connection, action)
            self.assertEqual(evaluate(kept, identity, connection, action), fresh, (identity, connection, action))

    def test_booleanIsNotOne(self) -> None:
        """C{1} then C{True}: the deny rule for C{true} still catches the boolean."""
        rules = [
            Rule("no-program", Effect.deny, groups=("*",), conditions=[Condition("sql.program", True)]),
            Rule("all", Effect.allow, groups=("*",)),
        ]
        p = PolicySet(rules)
        who = Identity("alice", "iss")
        one = evaluate(p, who, "db", Action("sql.query", "", {"sql.program": 1}))
        true = evaluate(p, who, "db", Action("sql.query", "", {"sql.program": True}))
        self.assertEqual((one.rule, true.rule), ("all", "no-program"))

    def test_grantIsPartOfTheKey(self) -> None:
        """A grant that ends changes the next decision of the same action."""
        rules = [Rule("granted", Effect.allow, groups=("*",), grant=True)]
        holds = [True]
        p = PolicySet(rules)
        who, action = Identity("alice", "iss"), Action("sql.query", "", {})
        self.assertIs(p.evaluate(who, "db", action, lambda i, c: holds[0]).effect, Effect.allow)
        holds[0] = False
        self.assertIs(p.evaluate(who, "db", action, lambda i, c: holds[0]).effect, Effect.deny)

    def test_bounded(self) -> None:
        """Clients choose the statements: the memo forgets everything once it holds its bound."""
        from hoopgw.policy import rules as module

        p = PolicySet([Rule("all", Effect.allow, groups=("*",), conditions=[Condition("sql.reads", ("*",))])])
        who = Identity("alice", "iss")
        for i in range(module._DECISIONS_KEPT + 10):
            evaluate(p, who, "db", Action("sql.query", "", {"sql.reads": (f"t{i}",)}))
        self.assertLessEqual(len(p._evaluator._decisions), module._DECISIONS_KEPT)


def _matches(rule: Rule, identity: Identity, connection: str, action: Action) -> bool:
    """A slow, obvious reference implementation of rule matching."""
    import fnmatch

    def glob(value: str, patterns: tuple[str, ...]) -> bool:
        return any(fnmatch.fnmatchcase(value, p) for p in patterns)

    if "*" not in rule.groups and not set(rule.groups) & set(identity.groups):
        return False
    if not glob(identity.subject, rule.users) or not glob(connection, rule.connections):
        return False
    if not glob(action.kind, rule.actions):
        return False
    for condition in rule.conditions:
        if condition.name not in action.attributes:
            return False
        value = action.attributes[condition.name]
        if isinstance(condition.value, bool):
            if not (isinstance(value, bool) and value == condition.value):
                return False
            continue
        values = (value,) if isinstance(value, str) else value
        if not isinstance(values, (tuple, list)):
            return False
        if not any(isinstance(v, str) and glob(v, condition.value) for v in values):
            return False
    return True


class GlobWitnessTests(SynchronousTestCase):
    """glob_witness: a value a rule's pattern matches, for what a front end cannot read (fail closed)."""

    def test_witness(self) -> None:
        from hoopgw.policy.rules import glob_witness

        self.assertEqual(glob_witness("session:*"), "session:*")
        self.assertEqual(glob_witness("s[0-9]x"), "s0x")
        self.assertEqual(glob_witness("[!a-z]*"), "A*")
        self.assertEqual(glob_witness("rm -[rf]*"), "rm -f*")
        self.assertIsNone(glob_witness("[!\x00-\U0010ffff]"))
        for pattern in ("a[", "[]]x", "[!]]y", "*[é]"):
            witness = glob_witness(pattern)
            self.assertIsNotNone(witness, pattern)
            self.assertTrue(fnmatch.fnmatchcase(witness, pattern), pattern)

"""
Tests for L{hoopgw.policy.service.PolicyService}.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from hoopgw.errors import ConfigError
from hoopgw.interfaces import IPolicy
from hoopgw.model import Action, Connection, Decision, Effect, Identity
from hoopgw.policy import PolicyService, PolicySet

ALICE = Identity("https://idp", "alice", groups=("dev",))
APPDB = Connection("appdb", "postgres", "127.0.0.1:5432")
SELECT = Action("sql.query", "SELECT 1", {"sql.statements": ("select",)})
ALLOW = '[[rule]]\nname = "allow-dev"\neffect = "allow"\ngroups = ["dev"]\n'
DENY = '[[rule]]\nname = "deny-all"\neffect = "deny"\n'


class PolicyServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.folder = Path(self.mktemp())
        self.folder.mkdir()
        (self.folder / "a.toml").write_text(ALLOW)
        self.loaded: list[PolicySet] = []

    def test_interface(self) -> None:
        """
        L{PolicyService} provides L{IPolicy}.
        """
        self.assertTrue(verifyObject(IPolicy, PolicyService(PolicySet())))

    def test_fromDirectory(self) -> None:
        """
        A service made from a folder decides with its policy, and tells the
        observer about the policy it loaded.
        """
        service = PolicyService.from_directory(self.folder, observer=self.loaded.append)
        self.assertEqual(self.loaded, [service.policy_set])
        self.assertEqual([f.rules for f in service.policy_set.files], [1])
        self.assertEqual(
            self.successResultOf(service.decide(ALICE, APPDB, SELECT)),
            Decision(Effect.allow, "allow-dev", ""),
        )

    def test_fromBrokenDirectory(self) -> None:
        """
        A broken folder at start-up raises the L{ConfigError}, and the
        observer hears nothing.
        """
        (self.folder / "b.toml").write_text('[[rule]]\nname = "x"\n')
        self.assertRaises(ConfigError, PolicyService.from_directory, self.folder,
                          observer=self.loaded.append)
        self.assertEqual(self.loaded, [])

    def test_decideNoMatch(self) -> None:
        """
        C{decide} fires at once with a deny when no rule allows the action.
        """
        service = PolicyService(PolicySet())
        self.assertEqual(
            self.successResultOf(service.decide(ALICE, APPDB, SELECT)),
            Decision(Effect.deny, None, 'no rule allows "sql.query" on "appdb" for alice'),
        )

    def test_decideFailure(self) -> None:
        """
        If evaluation raises (a bug), C{decide} returns a failed Deferred
        rather than raising, so the session refuses the action.
        """
        service = PolicyService(PolicySet())
        failure = self.failureResultOf(service.decide(None, APPDB, SELECT))  # type: ignore[arg-type]
        self.assertIsInstance(failure.value, AttributeError)

    def test_reload(self) -> None:
        """
        C{reload} puts the folder's new content in effect, returns it, and
        tells the observer.
        """
        service = PolicyService.from_directory(self.folder, observer=self.loaded.append)
        (self.folder / "b.toml").write_text(DENY)
        policy = service.reload()
        self.assertIs(service.policy_set, policy)
        self.assertEqual(len(self.loaded), 2)
        self.assertIs(self.loaded[1], policy)
        self.assertEqual(self.successResultOf(service.decide(ALICE, APPDB, SELECT)).rule,
                         "deny-all")

    def test_reloadBrokenKeepsPrevious(self) -> None:
        """
        If the folder is broken at reload, C{reload} raises the
        L{ConfigError}, the previous policy stays in effect and the observer
        hears nothing.
        """
        service = PolicyService.from_directory(self.folder, observer=self.loaded.append)
        before = service.policy_set
        (self.folder / "b.toml").write_text('[[rule]]\nname = "x"\neffect = "deny"\nbad = 1\n')
        error = self.assertRaises(ConfigError, service.reload)
        self.assertEqual(error.file, str(self.folder / "b.toml"))
        self.assertIs(service.policy_set, before)
        self.assertEqual(len(self.loaded), 1)
        self.assertEqual(self.successResultOf(service.decide(ALICE, APPDB, SELECT)).rule,
                         "allow-dev")

    def test_reloadWithoutFolder(self) -> None:
        """
        A service built from a policy value has nothing to reload.
        """
        error = self.assertRaises(ConfigError, PolicyService(PolicySet()).reload)
        self.assertEqual(
            str(error), "<embedded defaults>: this policy service has no policy folder to reload from"
        )

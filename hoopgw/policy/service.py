"""
The policy service: the loaded policy behind L{hoopgw.interfaces.IPolicy}.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from attrs import define, field
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from hoopgw.errors import ConfigError
from hoopgw.interfaces import IPolicy
from hoopgw.model import Action, Connection, Decision, Identity
from hoopgw.policy.loader import load_policy_dir
from hoopgw.policy.rules import HoldsGrant, PolicySet

__all__ = ["PolicyObserver", "PolicyService"]

PolicyObserver = Callable[[PolicySet], object]
"""
Told of every policy that takes effect (at start-up and on each successful
reload), e.g. to write one C{policy.loaded} audit record per file from
L{PolicySet.files} (L{hoopgw.policy.rules.PolicyFile.to_record}).
"""


@implementer(IPolicy)
@define
class PolicyService:
    """
    Decides actions with the current policy.

    Decisions are made in memory; files are read only by L{from_directory}
    (start-up) and L{reload}.

    @ivar policy_set: the policy in effect.
    @ivar directory: the folder L{reload} reads, if any.
    @ivar observer: see L{PolicyObserver}.
    """

    policy_set: PolicySet
    directory: Path | None = field(default=None, kw_only=True)
    observer: PolicyObserver | None = field(default=None, kw_only=True)
    # Whether an identity holds an access grant (hoopgw.grants), for rules with "grant"; None: nobody does.
    holds_grant: HoldsGrant | None = field(default=None, kw_only=True)

    @classmethod
    def from_directory(
        cls, directory: str | Path, *, observer: PolicyObserver | None = None
    ) -> PolicyService:
        """
        Load the policy folder and tell C{observer} about it.

        @raise ConfigError: if the policy is invalid; the gateway must not
            start without one.
        """
        policy = load_policy_dir(directory)
        service = cls(policy, directory=Path(directory), observer=observer)
        if observer is not None:
            observer(policy)
        return service

    def decide(self, identity: Identity, connection: Connection, action: Action) -> Deferred[Decision]:
        """
        See L{IPolicy.decide}.  The Deferred has already fired: with the
        decision, or with the failure of a bug, which the session must treat
        as a refusal.
        """
        try:
            return succeed(self.policy_set.evaluate(identity, connection.name, action, self.holds_grant))
        except Exception:  # noqa: BLE001 -- any bug must reach the session as a failure
            return fail()

    def reload(self) -> PolicySet:
        """
        Re-read the policy folder and put it in effect, then tell the
        observer.

        @raise ConfigError: if the folder now holds an invalid policy (or
            this service has no folder); the previous policy stays in
            effect, and the caller logs and audits the error.
        """
        if self.directory is None:
            raise ConfigError(None, "", "this policy service has no policy folder to reload from")
        policy = load_policy_dir(self.directory)
        self.policy_set = policy
        if self.observer is not None:
            self.observer(policy)
        return policy

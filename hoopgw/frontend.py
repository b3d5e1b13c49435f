"""
What a front end is written against: the one module a package adding a
kind of connection to hoopgw imports from (docs/front-ends.md walks
through one, from codec to plugin to tests).

A front end is two things:

  - A Twisted plugin providing L{IFrontEnd}: usually a L{FrontEnd} in a
    module of the package's own C{twisted/plugins/} folder (no
    C{__init__.py} there), naming its connection C{kind}, its
    C{[[connections]]} keys and their parsing (a L{Table}: its errors name
    the file, the key and what was expected), the policy conditions its
    actions carry (L{ConditionSpec}), its action kinds, its default
    listener and the dotted name of its factory.  L{installed} lists the
    front ends found.

  - That factory: a callable taking the L{GatewayContext} and returning
    the listener's protocol factory.  Its protocols use
    C{context.sessions}, an L{ISessionService}: authenticate the client
    (L{ISessionService.authenticate_token}), tell the pre-authentication
    guard (L{mark_authenticated}), open an L{ISession} on the connection the
    client names (L{ISessionService.open}), and for each thing the client
    asks for, build an L{Action} (its C{attributes} are what the
    conditions match), L{ISession.check} it, forward it only if the
    L{IActionHandle} is C{allowed}, and report its L{Outcome} with
    L{IActionHandle.finish}.  L{NotPermitted} (and L{WrongKind}),
    L{AuthenticationFailed} and L{AuditUnavailable} carry messages safe to
    show the client.  When the client leaves, L{ISession.close}; when the
    gateway ends the session, the session's C{on_terminate}, which the
    front end sets.  A session's recordings (L{IRecorder}; a terminal's,
    L{ITerminalRecorder}) are opened with L{ISession.open_recording}, which
    names and creates their files in the gateway's recordings folder (or
    returns C{None}: none kept) and adds them to the session; a recording
    kept elsewhere (in memory) is given to L{ISession.add_recording}.  A
    protocol may declare its C{transport} an L{IStreamTransport} for the
    checker (an annotation: what Twisted's TCP and TLS transports offer).
    A relay pauses a side's reading for several reasons at once with
    L{Reading}, and makes it the producer of the other side's writes with
    L{ReadPause} (flow control both ways).
    A listener that speaks TLS with the gateway's own certificate builds
    its options with L{server_options} (C{context.tls_cert},
    C{context.tls_key}); one that masks what it relays uses the session's
    L{SessionMasks} (C{session.masks}).  L{quote}, L{describe_type},
    L{format_address} and L{setting_default} word a connection key's error
    as the configuration's own errors are worded.  What a front end cannot
    read matches every deny rule: L{restrictive_patterns} lists the deny
    and review rules' patterns that can apply, and L{glob_witness} gives,
    for a pattern, a value it matches, to put on such an action; L{UNPINNED}, in
    an attribute's tuple, matches every deny and review rule's pattern (a
    request on a whole collection names every object).

The services are tested without sockets, files or threads with
L{hoopgw.testing}: C{memory_session_service()} is the real
L{ISessionService} over in-memory doubles of the audit log, policy,
identity verifier, store and metrics.

Everything here is re-exported from where it lives (L{hoopgw.interfaces},
L{hoopgw.model}, L{hoopgw.errors}, ...); this module's names are the ones
kept stable for front ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hoopgw.config import PreauthLimits, SecretRef, Table, format_address, setting_default
from hoopgw.errors import (
    AuditUnavailable,
    AuthenticationFailed,
    ConfigError,
    HoopgwError,
    NotPermitted,
    WrongKind,
    describe_type,
    quote,
)
from hoopgw.frontends import FrontEnd, FrontEnds, installed
from hoopgw.interfaces import (
    IActionHandle,
    IFrontEnd,
    IMetrics,
    IRecorder,
    ISession,
    ISessionService,
    ITerminalRecorder,
)
from hoopgw.model import Action, Connection, Decision, Effect, Identity, Outcome, Source, Status
from hoopgw.policy.rules import UNPINNED, ConditionKind, ConditionSpec, glob_witness, restrictive_patterns
from hoopgw.protocols import IStreamTransport, ReadPause, Reading, _preauth
from hoopgw.masking.service import SessionMasks
from hoopgw.recording.asciicast import AsciicastRecorder
from hoopgw.reviews import Review
from hoopgw.sessions import GATEWAY_RULE
from hoopgw.tls import server_options

if TYPE_CHECKING:
    from hoopgw.gateway import GatewayContext
else:

    def __getattr__(name: str) -> Any:
        # GatewayContext lives in hoopgw.gateway, which imports every
        # service the gateway assembles: imported when first asked for, so
        # that finding the plugins (twistd and the admin command do) costs
        # none of it.  A front end needs the name for annotations only.
        if name == "GatewayContext":
            from hoopgw.gateway import GatewayContext

            return GatewayContext
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Action",
    "AsciicastRecorder",
    "AuditUnavailable",
    "AuthenticationFailed",
    "ConditionKind",
    "ConditionSpec",
    "ConfigError",
    "Connection",
    "Decision",
    "Effect",
    "FrontEnd",
    "FrontEnds",
    "GATEWAY_RULE",
    "GatewayContext",
    "HoopgwError",
    "IActionHandle",
    "IFrontEnd",
    "IMetrics",
    "IRecorder",
    "ISession",
    "ISessionService",
    "IStreamTransport",
    "ITerminalRecorder",
    "Identity",
    "NotPermitted",
    "Outcome",
    "PreauthLimits",
    "ReadPause",
    "Reading",
    "Review",
    "SecretRef",
    "SessionMasks",
    "Source",
    "Status",
    "Table",
    "UNPINNED",
    "WrongKind",
    "describe_type",
    "format_address",
    "glob_witness",
    "installed",
    "mark_authenticated",
    "quote",
    "restrictive_patterns",
    "server_options",
    "setting_default",
]


def mark_authenticated(protocol: object) -> None:
    """
    Tell the gateway's pre-authentication guard that C{protocol}'s client
    has authenticated (call it once the session is open): the listener's
    login deadline no longer applies to the connection, its byte limit is
    lifted and it stops counting against the caps on connections still
    logging in (L{PreauthLimits}).  Until then a client that does not
    authenticate in time is disconnected.

    Safe to call more than once, and on a connection with no guard (a unit
    test's transport): then it does nothing.
    """
    _preauth.authenticated(protocol)

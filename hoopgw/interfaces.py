"""
Interfaces of the services every protocol front end shares, and of a front
end itself as the gateway sees it (L{IFrontEnd}).

Each method that may wait returns a L{Deferred}; nothing here knows about a
wire protocol.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IAuditLog(Interface):
    """
    An append-only, hash-chained, signed log of records.
    """

    log_id = Attribute("Stable identifier of this log (one per gateway process).")
    failed = Attribute("C{None}, or the reason the log cannot be written (fail closed).")

    def append(event, body):
        """
        Append one record.

        The record's bytes are handed to the operating system (write(2))
        before this returns: a caller that forwards an action once this
        returns has logged it first.  Raises L{hoopgw.errors.AuditUnavailable}
        synchronously if the log cannot be written.

        @param event: the record type, e.g. C{"action.start"}.
        @param body: JSON-compatible mapping (str keys; str, int, bool, None,
            lists and mappings of those).  C{seq}, C{prev}, C{time}, C{log} and
            C{event} are added by the log.
        @return: a L{Deferred} firing with the record's C{seq} once it is
            durable according to the configured sync mode (immediately in
            C{batched} mode, after fdatasync in C{strict} mode).
        """

    def checkpoint():
        """
        Write a signed checkpoint now.  @return: L{Deferred} firing with the
        checkpoint's tree size.
        """


class IIdentityVerifier(Interface):
    def verify_token(token):
        """
        Verify a bearer token (str).

        @return: L{Deferred} firing with an L{hoopgw.model.Identity} or failing
            with L{hoopgw.errors.AuthenticationFailed} whose C{reason} is safe
            to log (never contains the token).
        """

    def verified_identity(token):
        """
        The L{hoopgw.model.Identity} of a token verified in full moments
        ago and still valid, or C{None}: a synchronous shortcut for the
        per-request path; C{None} means "ask L{verify_token}", which also
        reports a refusal.
        """

    def identity_for_public_key(key_blob):
        """
        Map an SSH public key blob (bytes, wire format) to an
        L{hoopgw.model.Identity}, or C{None} if no identity is configured
        (or enrolled, and still valid) for it.
        """

    def public_key_refusal(key_blob):
        """
        Why a key L{identity_for_public_key} maps to nothing is refused, safe
        to log: C{"public key not mapped to an identity"}, or C{"enrolled
        key expired"}.
        """


class IPolicy(Interface):
    def decide(identity, connection, action):
        """
        Decide an action.

        @type identity: L{hoopgw.model.Identity}
        @type connection: L{hoopgw.model.Connection}
        @type action: L{hoopgw.model.Action}
        @return: L{Deferred} firing with a L{hoopgw.model.Decision}.
        """


class IRecorder(Interface):
    """A session's replayable recording (asciicast, SQL or HTTP transcript)."""

    path = Attribute("Where the recording is stored, or C{None} for memory.")

    def close():
        """Finish the recording. @return: L{Deferred} firing with its hex SHA-256."""


class IStore(Interface):
    """
    The gateway's queryable state: sessions, reviews and access grants.
    """

    def session_started(session):
        """
        Persist a new session.

        @param session: a mapping with at least C{id}, C{started}, C{subject},
            C{issuer}, C{connection}, C{kind}; optionally C{groups} (list),
            C{source}, C{client} (mapping), C{status}.  Times may be Unix
            seconds, an aware datetime or an RFC 3339 UTC string.
        @return: L{Deferred}.
        """

    def session_ended(session_id, ended, status, recording_sha256, *, bytes_in=None, bytes_out=None, counts=None):
        """
        Mark a session ended; C{counts} are its actions by outcome
        (C{{"actions": n, "succeeded": n, "blocked": n, ..., "reviewed": n}}).
        @return: L{Deferred}.
        """

    def list_sessions(limit=100, active=None, where=None):
        """
        @param where: a L{hoopgw.store.SessionFilter} (subject, connection,
            time range), instead of C{active} alone.
        @return: L{Deferred} firing with a list of mappings, newest first.
        """

    def end_interrupted(ended):
        """
        Mark every session not ended as C{interrupted} (at start-up: the
        previous process ended without closing them).

        @return: L{Deferred} firing with the ids of the sessions marked.
        """

    def review_saved(review):
        """
        Store a review record (L{hoopgw.reviews.Review.to_record}: its C{id},
        C{created}, C{state}, C{session}, C{requester}, C{connection} and
        the rest), new or changed.  @return: L{Deferred}.
        """

    def list_reviews(limit=100, state=None):
        """@return: L{Deferred} firing with review records, newest first (of C{state} only if given)."""

    def get_review(review_id):
        """@return: L{Deferred} firing with the review record, or C{None}."""

    def grant_saved(grant):
        """
        Store a grant record (L{hoopgw.grants.Grant.to_record}: its C{id},
        C{created}, C{state}, C{requester}, C{connection} and the rest), new
        or changed.  @return: L{Deferred}.
        """

    def list_grants(limit=100, state=None):
        """@return: L{Deferred} firing with grant records, newest first (of C{state} only if given)."""

    def get_grant(grant_id):
        """@return: L{Deferred} firing with the grant record, or C{None}."""

    def close():
        """Release resources. @return: L{Deferred}."""


class IFrontEnd(Interface):
    """
    A protocol front end, as the gateway knows it: everything about a kind
    of connection that is not the shared pipeline.

    Front ends are Twisted plugins: an object providing this interface and
    L{twisted.plugin.IPlugin} in a module of a C{twisted/plugins/} folder
    on C{sys.path}, found by L{hoopgw.frontends.installed}.  Nothing here
    runs per connection: the gateway reads these once, at start-up, and
    the factory L{build} returns does the work.
    """

    kind = Attribute(
        """
        The connection kind this front end serves (C{"postgres"}): the
        value of C{kind} in C{[[connections]]}, its key in C{[listen]} and
        C{[preauth.<kind>]}, its C{kind} label in metrics.  Lower-case
        letters, digits and C{_}, starting with a letter; not C{"api"} or a
        C{[preauth]} key, which the gateway uses.
        """
    )

    description = Attribute("One line saying what it serves, for people.")

    connection_keys = Attribute(
        """
        The keys a C{[[connections]]} table of this kind may have besides
        C{name} and C{kind} (a sequence of str).  Any other key is refused
        before L{parse_connection} is called.
        """
    )

    conditions = Attribute(
        """
        The policy conditions its actions can be judged by: a sequence of
        L{hoopgw.policy.rules.ConditionSpec}, named C{"<prefix>.<what>"}
        (C{"sql.statements"}).  A condition's L{ConditionKind
        <hoopgw.policy.rules.ConditionKind>} says how a rule writes it and
        how it matches: C{globs} is an array of patterns that matches when
        any pattern matches the action's attribute of that name (a string,
        or any string of a collection); C{bool} is C{true} or C{false}
        that matches when the attribute is that boolean.  An action without
        the attribute does not match.  So the front end's whole part in a
        decision is putting these attributes on its L{Action
        <hoopgw.model.Action>}s.
        """
    )

    action_kinds = Attribute(
        """
        The kinds of the actions its sessions decide, as glob patterns
        (C{"sql.query"}, C{"ssh.sftp.*"}), besides the shared
        C{"session.open"}: for documentation and metrics (their families,
        the part before the first dot, are counted from the start).
        """
    )

    default_listener = Attribute(
        """
        The Twisted server endpoint string the gateway listens on when
        C{[listen]} does not name this kind (C{"tcp:15432:interface=127.0.0.1"}),
        or C{None} for a front end that listens only when asked to.
        """
    )

    preauth = Attribute(
        """
        The L{hoopgw.config.PreauthLimits} of its listener when neither
        C{[preauth]} nor C{[preauth.<kind>]} says otherwise.
        """
    )

    def parse_connection(table):
        """
        Read one C{[[connections]]} table of this kind.  Called at start-up
        (and by the admin command), never per connection.

        @param table: a L{hoopgw.config.Table}: typed accessors (C{string},
            C{required}, C{address}, C{secret}, C{path_value}, C{duration},
            ...) whose errors name the file, the key and what was expected.
            Its keys are already checked against L{connection_keys}.
        @return: C{(target, settings)}: the target as records and messages
            show it (C{"db.internal:5432"}), and the settings value the
            factory finds on L{Connection.settings <hoopgw.model.Connection>}
            (a frozen attrs value, so that the effective configuration
            shows it).
        @raise hoopgw.errors.ConfigError: from the table, for what is wrong.
        """

    def build(context):
        """
        Make the listener's protocol factory over the shared services.

        @param context: a L{hoopgw.gateway.GatewayContext}: the
            configuration, the L{SessionService
            <hoopgw.sessions.SessionService>}, the reactor and the
            gateway's TLS certificate and key.
        @return: an L{IProtocolFactory
            <twisted.internet.interfaces.IProtocolFactory>}; the gateway
            listens with it on the kind's endpoint, behind the
            pre-authentication limits.
        """

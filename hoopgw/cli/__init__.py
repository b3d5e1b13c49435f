"""
The ``hoopgw`` admin command: ``hoopgw [--config FILE] <group> <verb> ...``.

It runs outside the gateway process, on the gateway's files, so it works
offline (an auditor verifying a copied log) and never needs the reactor.
It finds the configuration as the gateway does (L{hoopgw.config.find_config}:
C{--config}, C{$HOOPGW_CONFIG}, C{/etc/hoopgw/hoopgw.toml}, the quickstart
defaults), says on stderr which one and which data dir it used, and never
creates a data dir or a key unless told to (C{token issue --init}).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from hoopgw.audit import events
from hoopgw.errors import CommandError, ConfigError, PluginError, terminal_safe

# The configuration module is imported where it is used: `hoopgw token`, which
# kubectl runs before each call, must start quickly.
if TYPE_CHECKING:
    from hoopgw.config import Config
    from hoopgw.store import SessionFilter


def _config(args: argparse.Namespace) -> Config:
    """
    The configuration the gateway would use (L{find_config}), loaded once
    per run.  Which file and data dir it is goes to stderr (stdout is the
    result): always for C{token issue}, only on failure for C{token
    exec-credential}, else on a terminal or on failure (L{main}); never
    with C{--quiet}.
    """
    from hoopgw.config import find_config

    loaded: Config | None = getattr(args, "loaded_config", None)
    if loaded is not None:
        return loaded
    choice = find_config(args.config)
    # Secrets are only needed by the running gateway; admin verbs must work
    # without the database passwords in their environment.
    config = choice.load(check_secrets=False)
    args.loaded_config = config
    args.where = f"using {choice.describe()}; data dir {config.gateway.data_dir}"
    # announce: True always, False only on failure (kubectl shows an exec plugin's
    # stderr on every call), unset on a terminal.
    announce = getattr(args, "announce", None)
    if announce or (announce is None and sys.stderr.isatty()):
        _say_where(args)
    return config


def _say_where(args: argparse.Namespace) -> None:
    """Which configuration and data dir this run used, once, on stderr (unless --quiet)."""
    where = getattr(args, "where", None)
    if where is None or args.quiet or getattr(args, "said_where", False):
        return
    args.said_where = True
    print(f"hoopgw: {where}", file=sys.stderr)


def _time(text: str) -> datetime.datetime:
    from hoopgw.config import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError:
        pass
    else:
        return datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=seconds)
    try:
        value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an RFC 3339 time (2026-11-26T13:00:00Z) or a duration ago (15m), got {text!r}"
        )
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value


def _issue_token(args: argparse.Namespace) -> tuple[int, str, int]:
    """(exit code, token, lifetime in seconds) from the dev issuer; errors printed."""
    from hoopgw.identity.dev import KEY_PATH, DevIssuer, check_ttl

    from hoopgw.config import parse_duration

    config = _config(args)
    if not config.identity.dev_issuer:
        print("hoopgw: the dev issuer is disabled ([identity] dev_issuer = false)", file=sys.stderr)
        return 1, "", 0
    try:
        ttl = parse_duration(args.ttl)
        check_ttl(ttl, config.identity.dev_token_max_ttl_seconds)
    except ValueError as e:
        print(f"hoopgw: --ttl: {e}", file=sys.stderr)
        return 2, "", 0
    data_dir = config.gateway.data_dir
    key = data_dir / KEY_PATH
    try:
        exists = key.exists()
    except OSError as e:
        print(f"hoopgw: cannot read the dev issuer key {key}: {e.strerror}", file=sys.stderr)
        return 1, "", 0
    if not exists and not args.init:
        # A new key here signs tokens that the running gateway, on its own
        # data dir, refuses ("unknown key id"): never made without being asked.
        what = f"no data dir {data_dir}" if not data_dir.is_dir() else f"no dev issuer key in data dir {data_dir} ({KEY_PATH})"
        print(
            f"hoopgw: {what}: a token signed with a new key is refused by a gateway running on another "
            f"data dir. Name the gateway's configuration (--config FILE or HOOPGW_CONFIG=FILE), or pass "
            f"--init to create the key in {data_dir} (for a gateway that runs on it)",
            file=sys.stderr,
        )
        return 1, "", 0
    try:
        issuer = DevIssuer.load_or_create(
            data_dir,
            config.gateway.name,
            max_ttl_seconds=config.identity.dev_token_max_ttl_seconds,
        )
    except OSError as e:
        print(f"hoopgw: cannot read or create the dev issuer key {key}: {e.strerror}", file=sys.stderr)
        return 1, "", 0
    except ValueError as e:
        print(f"hoopgw: {e}", file=sys.stderr)
        return 1, "", 0
    if not exists:
        print(f"hoopgw: created the dev issuer key {key}", file=sys.stderr)
    try:
        return 0, issuer.issue(args.sub, tuple(args.group or ()), ttl), ttl
    except ValueError as e:
        print(f"hoopgw: {e}", file=sys.stderr)
        return 2, "", 0


def token_issue(args: argparse.Namespace) -> int:
    code, token, _ = _issue_token(args)
    if code == 0:
        print(token)
    return code


def token_exec_credential(args: argparse.Namespace) -> int:
    """
    The token as a kubectl exec credential plugin's answer
    (client.authentication.k8s.io/v1 ExecCredential), so that a kubeconfig
    ``users[].user.exec`` can run ``hoopgw token exec-credential`` (your
    cached token, refreshed) or ``... --sub S`` (a dev issuer token).
    """
    if args.sub is None:
        from hoopgw.cli.login import cached_credential, resolve_gateway

        token, expires_at = cached_credential(resolve_gateway(args.gateway))
        ttl = max(int(expires_at - datetime.datetime.now().timestamp()), 1)
    else:
        code, token, ttl = _issue_token(args)
        if code != 0:
            return code
    # A little early, so kubectl asks again before the gateway refuses it.
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=max(ttl - 30, 1))
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": token, "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")},
    }
    print(json.dumps(credential))
    return 0


def token_cached(args: argparse.Namespace) -> int:
    """`hoopgw token`: your cached token for a gateway, refreshed if it expired (PGPASSWORD=$(hoopgw token))."""
    from hoopgw.cli.login import cached_token, resolve_gateway

    print(cached_token(resolve_gateway(args.gateway)))
    return 0


def login_command(args: argparse.Namespace) -> int:
    from hoopgw.cli.login import login, resolve_gateway, whoami

    gateway = resolve_gateway(args.gateway)
    entry = login(gateway, device=args.device, tell=lambda text: print(_safe_lines(text), file=sys.stderr, flush=True))
    # Who the IdP vouched for, as the gateway verified it: a login finished
    # by someone else's code (another account) shows here.
    try:
        who = whoami(gateway)
        as_whom = f" as {who.get('subject')} (groups: {', '.join(who.get('groups') or []) or '-'})"
    except CommandError as e:
        as_whom = f" (the gateway did not say who you are: {e})"
    print(terminal_safe(f"logged in to {gateway} with {entry['issuer']}{as_whom}"
                        + (", refreshed as needed" if entry.get("refresh_token") else "")), file=sys.stderr)
    return 0


def _safe_lines(text: str) -> str:
    """Text from an IdP or a gateway, for a terminal: its lines kept, every other control character escaped."""
    return "\n".join(terminal_safe(line) for line in text.split("\n"))


def logout_command(args: argparse.Namespace) -> int:
    from hoopgw.cli.login import logout, resolve_gateway

    from hoopgw.cli.sshkey import forget_ssh_key

    gateway = resolve_gateway(args.gateway)
    forget_ssh_key(gateway)  # while the token can still say whose key it is
    print(f"{'logged out of' if logout(gateway) else 'not logged in to'} {gateway}", file=sys.stderr)
    return 0


def client_command(args: argparse.Namespace) -> int:
    """`hoopgw psql|kubectl CONNECTION ...`: exec the stock client set up for the gateway."""
    from hoopgw.cli import clients
    from hoopgw.cli.login import resolve_gateway

    build = {"psql": clients.psql, "kubectl": clients.kubectl, "ssh": clients.ssh}[args.group]
    build(resolve_gateway(args.gateway), args.connection, list(args.client_args)).exec()


def config_kubeconfig_command(args: argparse.Namespace) -> int:
    from hoopgw.cli.clients import write_kubeconfig
    from hoopgw.cli.login import resolve_gateway

    name, path = write_kubeconfig(resolve_gateway(args.gateway), args.connection, path=args.kubeconfig, name=args.name,
                                  force=args.force)
    where = path or "your kubeconfig"
    print(f"wrote context {name!r} to {where}: kubectl --context {name} get pods", file=sys.stderr)
    return 0


def config_ssh_command(args: argparse.Namespace) -> int:
    from hoopgw.cli.clients import ssh_config_block, write_ssh_config
    from hoopgw.cli.login import resolve_gateway, whoami

    gateway = resolve_gateway(args.gateway)
    connections = [c["name"] for c in whoami(gateway)["connections"] if c.get("kind") == "ssh"]
    if not connections:
        raise CommandError(f"policy at {gateway} lets you open no SSH connection (hoopgw status)")
    block, aliases = ssh_config_block(gateway, connections, prefix=args.prefix)
    if args.print:
        print(block, end="")
        return 0
    path = Path(args.file).expanduser() if args.file else Path.home() / ".ssh" / "config"
    write_ssh_config(path, gateway, block)
    print(f"wrote {len(aliases)} host{'s' if len(aliases) != 1 else ''} to {path}: "
          + ", ".join(f"ssh {a}" for a in aliases), file=sys.stderr)
    return 0


def ssh_key_command(args: argparse.Namespace) -> int:
    from hoopgw.cli.sshkey import command

    return command(args)


def status_command(args: argparse.Namespace) -> int:
    from hoopgw.cli.login import resolve_gateway, whoami

    gateway = resolve_gateway(args.gateway)
    me = whoami(gateway)
    if args.json:
        print(json.dumps({"gateway": gateway, **me}, sort_keys=True))
        return 0
    expires = (datetime.datetime.fromtimestamp(me["expires"], datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
               if me.get("expires") else "-")
    print(terminal_safe(f"{me['subject']} ({me['issuer']}) at {gateway}"))
    print(terminal_safe(f"  groups: {', '.join(me['groups']) or '-'}; token valid until {expires}"))
    print(terminal_safe("  connections you may open: "
                        + (", ".join(f"{c['name']} ({c['kind']})" for c in me["connections"]) or "none")))
    return 0


def _audit_dir(config: Config, args: argparse.Namespace) -> Path:
    return Path(args.dir) if getattr(args, "dir", None) else config.gateway.data_dir / "audit"


def _records_dir(config: Config, args: argparse.Namespace) -> Path:
    """The audit directory, if it holds records (a reader never creates one)."""
    directory = _audit_dir(config, args)
    if not (directory / "records.jsonl").is_file():
        raise CommandError(f"{directory}: no audit records (has the gateway run with this data dir?)")
    return directory


def _read_vkey(args: argparse.Namespace, directory: Path) -> str | None:
    """The verifier key (--vkey, else DIR/audit.vkey), or None after saying why it cannot be read."""
    vkey_path = Path(args.vkey) if args.vkey else directory / "audit.vkey"
    try:
        return vkey_path.read_text()
    except OSError as e:
        print(f"hoopgw: cannot read verifier key {vkey_path}: {e.strerror}", file=sys.stderr)
        return None


def audit_verify(args: argparse.Namespace) -> int:
    from hoopgw.audit.verify import verify

    config = _config(args)
    directory = _audit_dir(config, args)
    vkey = _read_vkey(args, directory)
    if vkey is None:
        return 1
    witnesses = [_witness_target(w) for w in (args.witness or ())]
    given: list[str] = []
    for text in args.witness_vkey or ():
        try:
            given.append(_witness_vkey(text))
        except ValueError as e:
            print(f"hoopgw: --witness-vkey: {e}", file=sys.stderr)
            return 1
    # --witness-vkey applies to the URLs given with --witness; a configured
    # witness's key to that witness.
    witness_vkeys: dict[str, list[str]] = {w: list(given) for w in witnesses if _is_url(w)}
    if given and not witness_vkeys:
        print("hoopgw: --witness-vkey: no --witness URL to check with it", file=sys.stderr)
        return 1
    if args.configured_witnesses:
        witnesses += [w for w in config.audit.witnesses if w not in witnesses]
        if not config.audit.witnesses:
            print("hoopgw: --configured-witnesses: [audit] witness is not set", file=sys.stderr)
            return 1
        for url, key in config.audit.witness_vkeys:
            witness_vkeys.setdefault(url, []).append(key)
    report = verify(
        directory,
        vkey,
        allow_unsigned_tail=args.allow_unsigned_tail,
        witnesses=witnesses,
        witness_timeout=config.audit.witness_timeout_seconds,
        witness_vkeys=witness_vkeys,
    )
    print(report.summary())
    if report.ok and not args.vkey:
        # Whoever rewrote the log with a key of their own wrote this file too.
        print(
            f"  the key was read from {directory / 'audit.vkey'}, beside the log (not pinned): this OK "
            f"holds only if key {report.key_id} is the one in a copy kept off the host since the log "
            f"was created; check with --vkey <that copy>"
        )
    return 0 if report.ok else 1


def _is_url(text: str) -> bool:
    from hoopgw.audit.witness import is_url

    return is_url(text)


def _witness_vkey(text: str) -> str:
    """A witness cosignature key, given as the key or a file holding it."""
    from hoopgw.audit.checkpoint import CheckpointError
    from hoopgw.audit.witness import CosignatureVerifier

    if "+" not in text:
        try:
            text = Path(text).read_text()
        except OSError as e:
            raise ValueError(f"{text}: not a witness key (<name>+<key id>+<base64>), nor a readable file ({e.strerror})") from None
    try:
        return CosignatureVerifier.from_vkey(text).text
    except CheckpointError as e:
        raise ValueError(str(e)) from None


def _witness_target(text: str) -> str:
    from hoopgw.audit.witness import is_url

    return text.rstrip("/") if is_url(text) else str(Path(text).expanduser().absolute())


def audit_resolve_tail(args: argparse.Namespace) -> int:
    from hoopgw.audit.log import AuditStateError
    from hoopgw.audit.resolve import ResolveError, resolve_tail

    config = _config(args)
    directory = _audit_dir(config, args)
    vkey = _read_vkey(args, directory)
    if vkey is None:
        return 1
    try:
        print(resolve_tail(directory, vkey, "adopt" if args.adopt else "set-aside"))
    except (ResolveError, AuditStateError) as e:
        print(f"hoopgw: {e}", file=sys.stderr)
        return 1
    return 0


def audit_search(args: argparse.Namespace) -> int:
    from hoopgw.audit.search import search

    config = _config(args)
    directory = _records_dir(config, args)
    records = search(
        directory,
        session=args.session,
        subject=args.sub,
        connection=args.connection,
        since=args.since,
        until=args.until,
        event=args.event,
    )
    for record in records:
        if args.json:
            print(_json_line(record))
        else:
            print(_summary(record))
    return 0


# Line ends to str.splitlines() (and so to many readers of "one JSON record
# per line") that JSON leaves raw: a value holding them (SQL text, a path)
# would read as two lines, the second a record of the client's making.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _json_line(record: dict[str, Any]) -> str:
    """A record as one line of JSON, whatever its values hold."""
    return json.dumps(record, sort_keys=True, ensure_ascii=False).translate(_LINE_BREAKS)


def _summary(record: dict[str, Any]) -> str:
    identity = record.get("identity") or {}
    parts = [
        record.get("time", "?"),
        f"#{record.get('seq')}",
        record.get("event", "?"),
        identity.get("sub", "-"),
        record.get("connection", "-"),
    ]
    action = record.get("action") or {}
    if action.get("input"):
        parts.append(repr(action["input"]))
    decision = record.get("decision") or {}
    if decision:
        parts.append(decision.get("effect", "") + (f"({decision['rule']})" if decision.get("rule") else ""))
    outcome = record.get("outcome") or {}
    if outcome:
        parts.append(outcome.get("status", ""))
        if outcome.get("error"):
            parts.append(repr(outcome["error"]))
    # Why, wherever the record keeps it: policy.rejected's error, auth.failed's
    # and log.recovered's reason, a review's or grant's decision.
    for key in ("error", "reason"):
        if record.get(key):
            parts.append(repr(record[key]))
    for key in ("review", "grant"):
        held = record.get(key)
        decision = held.get("decision") if isinstance(held, dict) else None
        reason = decision.get("reason") if isinstance(decision, dict) else None
        if reason:
            parts.append(repr(reason))
    return terminal_safe(" ".join(str(p) for p in parts))


def _read_sessions(config: Config, where: SessionFilter | None, limit: int) -> list[dict[str, Any]] | None:
    """The store's rows (read-only), or None after saying why there are none to read."""
    from hoopgw.store import FILENAME, StoreError
    from hoopgw.store.sqlite import read_sessions

    path = config.gateway.data_dir / FILENAME
    if not path.exists():
        print(f"hoopgw: no session store at {path} (has the gateway run with this data dir?)", file=sys.stderr)
        return None
    try:
        return read_sessions(path, limit=limit, where=where)
    except StoreError as e:
        print(f"hoopgw: {e}", file=sys.stderr)
        return None


def _counted(row: dict[str, Any], recordings: Path) -> dict[str, Any]:
    """
    A store row as C{sessions list --json} prints it: its C{counts} replaced
    by C{actions} and C{outcomes}, and C{recording_bytes} added.
    """
    row = dict(row)
    # Stored at a session's end: none while it is open, or when its process died (interrupted).
    counts = row.pop("counts", {}) or {}
    row["actions"] = counts.get("actions")
    # Allowed: forwarded (whatever then happened there); reviewed: held for a human, whatever they decided.
    row["outcomes"] = {
        "allowed": counts.get("succeeded", 0) + counts.get("failed", 0) + counts.get("expired", 0),
        "blocked": counts.get("blocked", 0),
        "failed": counts.get("failed", 0),
        "reviewed": counts.get("reviewed", 0),
    } if counts else None
    row["recording_bytes"] = sum(p.stat().st_size for p in recordings.glob(f"{row['id']}*.cast"))
    return row


def _actions_text(row: dict[str, Any]) -> str:
    outcomes = row["outcomes"]
    if outcomes is None:
        return f"{'-':>5} actions ({'still open' if row['ended'] is None else 'not counted'})"
    return (
        f"{row['actions']:>5} actions ({outcomes['allowed']} allowed, {outcomes['blocked']} blocked, "
        f"{outcomes['failed']} failed, {outcomes['reviewed']} reviewed)"
    )


def sessions_list(args: argparse.Namespace) -> int:
    from hoopgw.audit.search import format_time
    from hoopgw.store import SessionFilter

    config = _config(args)
    where = SessionFilter(
        active=True if args.active else None,
        subject=args.sub,
        connection=args.connection,
        since=format_time(args.since) if args.since else None,
        until=format_time(args.until) if args.until else None,
    )
    rows = _read_sessions(config, where, args.limit)
    if rows is None:
        return 1
    recordings = config.gateway.data_dir / "recordings"
    rows = [_counted(row, recordings) for row in rows]
    if args.json:
        for row in rows:
            print(json.dumps(row, sort_keys=True, default=str))
        return 0
    width = max([len(row["id"]) for row in rows] + [len("ID")])
    print(
        f"{'ID':<{width}}  {'STARTED':<27}  {'ENDED':<27}  {'STATUS':<11} {'SUBJECT':<16} {'CONNECTION':<16} "
        f"{'SOURCE':<22} {'ACTIONS':>5}"
    )
    for row in rows:
        print(terminal_safe(
            f"{row['id']:<{width}}  {row['started']}  {row.get('ended') or '-':>27}  {row['status']:<11} "
            f"{row['subject']:<16} {row['connection']:<16} {row['source']:<22} {_actions_text(row)}"
            + (f"  recording {row['recording_bytes']} bytes" if row["recording_bytes"] else "")
        ))
    return 0


def sessions_show(args: argparse.Namespace) -> int:
    """
    One session: its store row (who, what, when, status, bytes), its counts,
    how many audit records name it, and its recordings as its
    C{session.end} lists them.  Read-only, as C{sessions list} and C{replay}.
    """
    from hoopgw.replay import UnknownSession, recordings, session_records
    from hoopgw.store import SessionFilter

    config = _config(args)
    rows = _read_sessions(config, SessionFilter(session=args.session), 1)
    if rows is None:
        return 1
    audit_dir = _audit_dir(config, args)
    try:
        records = session_records(audit_dir, args.session)
    except UnknownSession:
        records = []
    if not rows and not records:
        print(f"hoopgw: no session {args.session!r} in the session store or in {audit_dir}", file=sys.stderr)
        return 1
    folder = config.gateway.data_dir / "recordings"
    casts = []
    for path in recordings(records):
        # Where the trail says, else in this data dir's recordings folder (a data dir copied elsewhere), as replay does.
        found = path if path.is_file() else folder / path.name
        casts.append({"path": str(found), "bytes": found.stat().st_size if found.is_file() else None})
    counts = (rows[0].get("counts") or {}) if rows else {}
    session = _counted(rows[0], folder) if rows else None
    if args.json:
        print(json.dumps(
            {"session": session, "counts": counts or None, "records": len(records), "recordings": casts},
            indent=2, sort_keys=True, default=str,
        ))
        return 0
    lines = [f"session     {args.session}"]
    if session is None:
        lines.append("store       no row in the session store (only the audit trail's records)")
    else:
        groups = ", ".join(session.get("groups") or ()) or "-"
        lines += [
            f"subject     {session['subject']} (issuer {session['issuer']}; groups {groups})",
            f"connection  {session['connection']} ({session['kind']})",
            f"source      {session['source']}" + (f"  client {json.dumps(session['client'], sort_keys=True)}"
                                                  if session.get("client") else ""),
            f"started     {session['started']}",
            f"ended       {session.get('ended') or '-'}",
            f"status      {session['status']}",
            f"bytes       {session.get('bytes_in') or 0} in, {session.get('bytes_out') or 0} out",
            f"actions     {_actions_text(session).strip()}",
        ]
        if counts:
            lines.append("counts      " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    lines.append(
        f"records     {len(records)} in {audit_dir}"
        + (f" (hoopgw replay {args.session})" if records else "")
    )
    for cast in casts:
        size = f"{cast['bytes']} bytes" if cast["bytes"] is not None else "missing"
        lines.append(f"recording   {cast['path']} ({size})")
    if session is not None and session.get("recording_sha256"):
        lines.append(f"recording sha256 {session['recording_sha256']}")
    for line in lines:
        print(terminal_safe(line))
    return 0


def sessions_export(args: argparse.Namespace) -> int:
    from hoopgw.evidence.bundle import BundleError, export_bundle

    config = _config(args)
    if args.checkpoint:
        # The records just written are covered once the running gateway signs a checkpoint.
        status, body = _api(args, "POST", "/api/v1/checkpoints", {})
        if _api_result(status, body):
            return 1
    try:
        manifest = export_bundle(config.gateway.data_dir, args.session, args.out)
    except BundleError as e:
        print(f"hoopgw: {e}", file=sys.stderr)
        return 1
    recordings = sum(1 for name in manifest["files"] if name.startswith("recordings/"))
    print(
        f"{args.out}: session {args.session}, {len(manifest['records'])} records, {recordings} recording(s), "
        f"covered by checkpoint {manifest['checkpoint']['size']} (newest {manifest['newest']['size']}), key {manifest['key']}"
    )
    return 0


def audit_verify_bundle(args: argparse.Namespace) -> int:
    from hoopgw.evidence.bundle import verify_bundle

    try:
        vkey = Path(args.vkey).read_text() if args.vkey else None
    except (OSError, UnicodeDecodeError) as e:
        print(f"hoopgw: --vkey {args.vkey}: cannot read it ({e})", file=sys.stderr)
        return 1
    report = verify_bundle(args.bundle, vkey=vkey)
    bundle = terminal_safe(args.bundle)
    if not report.ok:
        # Everything printed from the bundle is escaped: a member's name could otherwise draw a fake "OK".
        for problem in report.problems:
            print(f"hoopgw: {bundle}: {terminal_safe(problem)}", file=sys.stderr)
        print(f"{bundle}: FAILED ({len(report.problems)} problem(s))")
        return 1
    for note in report.notes:
        print(f"hoopgw: {bundle}: note: {terminal_safe(note)}", file=sys.stderr)
    signer = (
        f"signed by the key given ({terminal_safe(report.key)})" if args.vkey else
        f"signed by the key the bundle carries, {terminal_safe(report.key)}, vkey SHA-256 {report.fingerprint}: "
        "compare it with the operator's, or pass --vkey"
    )
    print(
        f"{bundle}: OK: session {terminal_safe(report.session)}, {report.records} records and {report.recordings} "
        f"recording(s) in signed checkpoint {report.checkpoint}, consistent with checkpoint {report.newest}; {signer}"
    )
    return 0


def evidence(args: argparse.Namespace) -> int:
    import csv
    import io
    import time

    from hoopgw.audit.verify import verify
    from hoopgw.evidence.controls import build_evidence, findings_rows

    config = _config(args)
    audit_dir = _records_dir(config, args)
    started = time.monotonic()
    terminal = sys.stderr.isatty()

    def progress(records: int, done: int, total: int) -> None:
        # On a terminal only: a pipe or a log file gets the result, not a ticker.
        if not terminal:
            return
        elapsed = time.monotonic() - started
        rate = records / elapsed if elapsed else 0
        left = (total - done) / (done / elapsed) if done and elapsed else 0
        print(f"\r{records:,} records read, {rate:,.0f}/s, about {left:.0f} s left ", end="", file=sys.stderr)

    try:
        document = build_evidence(
            audit_dir,
            since=args.since,
            until=args.until,
            controls=tuple(args.control or ()),
            connection=args.connection,
            config=config,
            verify=lambda directory, vkey: verify(directory, vkey, allow_unsigned_tail=True),
            progress=progress,
        )
    except ValueError as e:
        print(f"hoopgw: {e}", file=sys.stderr)
        return 1
    if terminal:
        print(file=sys.stderr)
    if args.format == "json":
        data = json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False).encode() + b"\n"
    elif args.format == "html":
        from hoopgw.evidence.html import render_html

        data = render_html(document)
    elif args.format == "oscal":
        from hoopgw.evidence.oscal import render_oscal

        data = render_oscal(document)
    else:
        text = io.StringIO()
        writer = csv.DictWriter(
            text, ["control", "kind", "time", "subject", "connection", "session", "detail", "records"], lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(findings_rows(document))
        data = text.getvalue().encode()
    Path(args.out).write_bytes(data)
    findings = sum(len(c["findings"]) for c in document["controls"].values())
    print(f"{args.out}: {len(document['controls'])} control(s), {findings} finding(s)")
    return 0


def replay(args: argparse.Namespace) -> int:
    from hoopgw.replay import UnknownSession, play_asciicast, recordings, session_records, transcript

    config = _config(args)
    try:
        records = session_records(_audit_dir(config, args), args.session)
    except UnknownSession as e:
        print(f"hoopgw: {e}", file=sys.stderr)
        return 1
    if args.json:
        for record in records:
            print(_json_line(record))
        return 0
    start = next((r for r in records if r.get("event") == events.SESSION_START), {})
    # Where the trail says, else in this data dir's recordings folder (a data dir copied elsewhere).
    folder = config.gateway.data_dir / "recordings"
    casts = [p if p.is_file() else folder / p.name for p in recordings(records)]
    casts = [p for p in casts if p.is_file()]
    if casts and not args.transcript and (start.get("kind") == "ssh" or args.play):
        out = sys.stdout.buffer
        for cast in casts:
            try:
                play_asciicast(cast, out, speed=args.speed, max_idle=args.max_idle)
            except (OSError, ValueError) as e:
                print(f"hoopgw: cannot play {cast}: {e}", file=sys.stderr)
                return 1
        return 0
    for line in transcript(records):
        print(line)
    return 0


def _api_arguments(parser: argparse.ArgumentParser, use: str = "") -> None:
    """--api and --token: a verb that talks to the running gateway's API, as the caller."""
    parser.add_argument("--api", help=f"the gateway's API URL{use}: https, or http to 127.0.0.1 / [::1] (default: [listen] api of the configuration)")
    parser.add_argument("--token", help=f"your bearer token{use} (default: $HOOPGW_TOKEN)")


def _api_url(args: argparse.Namespace) -> str:
    """The running gateway's API: --api, or [listen] api of the configuration (a tcp: endpoint)."""
    if args.api:
        api: str = args.api
        return api.rstrip("/")
    endpoint = _config(args).listen.api
    if not endpoint:
        raise CommandError("the configuration has no API listener ([listen] api); give --api URL")
    fields = dict(part.split("=", 1) for part in endpoint.split(":")[2:] if "=" in part)
    port = endpoint.split(":")[1] if endpoint.startswith("tcp:") else ""
    if not port.isdigit():
        raise CommandError(f"[listen] api = {endpoint!r}: give --api URL (only tcp: endpoints are read)")
    host = fields.get("interface", "127.0.0.1")
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{host}:{port}"


def _api(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, object]:
    """One call to the gateway's API (reviews, grants) with the caller's token; (status, JSON body)."""
    from hoopgw.cli.login import _secure, call

    token = args.token or os.environ.get("HOOPGW_TOKEN")
    if not token:
        raise CommandError("a token is needed: --token TOKEN or HOOPGW_TOKEN (your identity decides)")
    # The token approves and asks for access as its owner: over https, as
    # hoopgw login and ssh-key send it (plain http only on this machine).
    url = _secure(_api_url(args) + path, "a gateway (its API listener as an ssl: endpoint)")
    return call(url, body=body, token=token, method=method)


def _api_result(status: int, body: object) -> int:
    if status >= 400:
        error = body.get("error") if isinstance(body, dict) else body
        print(f"hoopgw: {error} (HTTP {status})", file=sys.stderr)
        return 1
    return 0


def _review_line(review: dict[str, Any]) -> str:
    action = review.get("action", {})
    return (
        f"{review['id']}  {review['state']:<9} {review['requester']['subject']:<16} {review['connection']:<14} "
        f"{review.get('rule') or '-':<20} {action.get('kind', '')}: {action.get('input', '')!r}"
    )


def reviews_list(args: argparse.Namespace) -> int:
    query = "?state=" + args.state if args.state else ""
    status, body = _api(args, "GET", "/api/v1/reviews" + query)
    if _api_result(status, body):
        return 1
    assert isinstance(body, dict)
    for review in body["reviews"]:
        if args.json:
            print(json.dumps({**review, "requester": review["requester"]["subject"],
                              "action": review.get("action", {}).get("input", "")}, sort_keys=True))
        else:
            print(_review_line(review))
    return 0


def reviews_show(args: argparse.Namespace) -> int:
    status, body = _api(args, "GET", f"/api/v1/reviews/{args.id}")
    if _api_result(status, body):
        return 1
    print(json.dumps(body, indent=2, sort_keys=True))
    return 0


def reviews_decide(args: argparse.Namespace) -> int:
    status, body = _api(args, "POST", f"/api/v1/reviews/{args.id}/{args.verb}", {"reason": args.reason or ""})
    if _api_result(status, body):
        return 1
    assert isinstance(body, dict)
    print(f"review {args.id}: {body['state']}")
    return 0


def _grant_line(grant: dict[str, Any]) -> str:
    until = grant.get("expires") or "-"
    return (
        f"{grant['id']}  {grant['state']:<9} {grant['requester']['subject']:<16} {grant['connection']:<14} "
        f"{grant['duration_seconds']:>6}s  until {until:<27}  review {grant.get('review') or '-'}  {grant.get('reason', '')!r}"
    )


def access_request(args: argparse.Namespace) -> int:
    body = {"connection": args.connection, "duration": args.duration, "reason": args.reason}
    status, grant = _api(args, "POST", "/api/v1/grants", body)
    if _api_result(status, grant):
        return 1
    assert isinstance(grant, dict)
    print(f"grant {grant['id']} requested: access to {grant['connection']} for {args.duration}, once approved")
    print(f"an approver ({' or '.join(grant['approvers'])}) runs: hoopgw reviews approve {grant['review']}")
    return 0


def access_list(args: argparse.Namespace) -> int:
    query = "?state=" + args.state if args.state else ""
    status, body = _api(args, "GET", "/api/v1/grants" + query)
    if _api_result(status, body):
        return 1
    assert isinstance(body, dict)
    for grant in body["grants"]:
        print(json.dumps(grant, sort_keys=True) if args.json else _grant_line(grant))
    return 0


def access_revoke(args: argparse.Namespace) -> int:
    status, body = _api(args, "POST", f"/api/v1/grants/{args.id}/revoke", {"reason": args.reason or ""})
    if _api_result(status, body):
        return 1
    assert isinstance(body, dict)
    print(f"grant {args.id}: {body['state']}")
    return 0


def policy_check(args: argparse.Namespace) -> int:
    from hoopgw.gateway import policies_dir
    from hoopgw.policy.loader import load_policy_dir

    config = _config(args)
    directory = Path(args.dir) if args.dir else policies_dir(config)
    policy_set = load_policy_dir(directory)
    for loaded in policy_set.files:
        print(f"{loaded.path}: {loaded.rules} rules, {loaded.masks} masks, sha256 {loaded.sha256}")
    print(f"OK: {len(policy_set.rules)} rules, {len(policy_set.masks)} masks in {directory}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="hoopgw", description="hoopgw administration")
    top.add_argument(
        "--config", "-c",
        help="the gateway's configuration file (default: $HOOPGW_CONFIG, else /etc/hoopgw/hoopgw.toml if it "
             "exists, else the quickstart defaults: data in ./hoopgw-data), found as twistd hoopgw finds it",
    )
    top.add_argument(
        "--quiet", "-q", action="store_true",
        help="do not say on stderr which configuration and data dir were used",
    )
    groups = top.add_subparsers(dest="group", required=True, metavar="GROUP")

    token_group = groups.add_parser(
        "token", help="your cached token (hoopgw login), or dev issuer tokens (issue, exec-credential --sub)"
    )
    token_group.add_argument("--gateway", help="the gateway's API URL (default: $HOOPGW_GATEWAY, or the last logged in to)")
    token_group.set_defaults(run=token_cached)
    token = token_group.add_subparsers(dest="verb", required=False)
    issue = token.add_parser("issue", help="print a token signed by the dev issuer")
    issue.add_argument("--sub", required=True, help="subject (user or service account)")
    issue.add_argument("--group", action="append", help="group membership (repeatable)")
    issue.add_argument("--ttl", default="15m", help="lifetime, e.g. 15m, 8h (default 15m; at most [identity] dev_token_max_ttl)")
    issue.add_argument("--init", action="store_true", help="create the dev issuer key if the data dir has none")
    issue.set_defaults(run=token_issue, announce=True)
    credential = token.add_parser(
        "exec-credential", help="print a token as a kubectl exec plugin ExecCredential (JSON)"
    )
    credential.add_argument("--sub", help="subject (user or service account): a dev issuer token; without: your cached one")
    credential.add_argument("--group", action="append", help="group membership (repeatable)")
    credential.add_argument("--ttl", default="15m", help="lifetime, e.g. 15m, 8h (default 15m; at most [identity] dev_token_max_ttl)")
    credential.add_argument("--init", action="store_true", help="create the dev issuer key if the data dir has none")
    credential.add_argument("--gateway", help="without --sub: the gateway whose cached token (default: the last logged in to)")
    credential.set_defaults(run=token_exec_credential, announce=False)

    sign_in = groups.add_parser("login", help="log in with the gateway's identity provider (browser, or --device)")
    sign_in.add_argument("--gateway", help="the gateway's API URL, e.g. http://127.0.0.1:18009 (default: $HOOPGW_GATEWAY)")
    sign_in.add_argument("--device", action="store_true", help="the device flow: a code to enter on another device")
    sign_in.set_defaults(run=login_command)
    sign_out = groups.add_parser("logout", help="forget your cached tokens for a gateway")
    sign_out.add_argument("--gateway", help="the gateway's API URL (default: the last logged in to)")
    sign_out.set_defaults(run=logout_command)
    state = groups.add_parser("status", help="who you are at a gateway, until when, and the connections you may open")
    state.add_argument("--gateway", help="the gateway's API URL (default: the last logged in to)")
    state.add_argument("--json", action="store_true")
    state.set_defaults(run=status_command)

    for client, listener in (("psql", "PostgreSQL"), ("ssh", "SSH"), ("kubectl", "HTTP")):
        wrapper = groups.add_parser(
            client, help=f"run {client} on a {listener} connection with your cached token (hoopgw login)",
            description=f"Runs the stock {client} with your cached token and the gateway's address and TLS "
                        f"certificate; every argument after CONNECTION goes to {client}.",
        )
        wrapper.add_argument("--gateway", help="the gateway's API URL (default: $HOOPGW_GATEWAY, or the last logged in to)")
        wrapper.add_argument("connection", metavar="CONNECTION", help="the connection's name")
        wrapper.add_argument("client_args", nargs=argparse.REMAINDER, metavar="ARGS", help=f"{client}'s own arguments")
        wrapper.set_defaults(run=client_command)
    setup_command = groups.add_parser("config", help="write client configuration for a gateway you logged in to")
    setup = setup_command.add_subparsers(dest="verb", required=True)
    kube = setup.add_parser("kubeconfig", help="add a context for an HTTP connection to your kubeconfig (through kubectl config)")
    kube.add_argument("--gateway", help="the gateway's API URL (default: $HOOPGW_GATEWAY, or the last logged in to)")
    kube.add_argument("--kubeconfig", help="the file to write (default: kubectl's own: $KUBECONFIG, else ~/.kube/config)")
    kube.add_argument("--name", help="the context's (and its cluster's and user's) name (default: the connection's)")
    kube.add_argument("--force", action="store_true", help="replace entries of that name hoopgw did not write")
    kube.add_argument("connection", metavar="CONNECTION")
    kube.set_defaults(run=config_kubeconfig_command)
    ssh_setup = setup.add_parser("ssh", help="add a Host for each SSH connection you may open to ~/.ssh/config")
    ssh_setup.add_argument("--gateway", help="the gateway's API URL (default: $HOOPGW_GATEWAY, or the last logged in to)")
    ssh_setup.add_argument("--file", help="the ssh config to write (default: ~/.ssh/config)")
    ssh_setup.add_argument("--prefix", help="before each connection's name in its Host alias (default: the gateway's name and -)")
    ssh_setup.add_argument("--print", action="store_true", help="print the block instead of writing it")
    ssh_setup.set_defaults(run=config_ssh_command)
    ssh_key = groups.add_parser(
        "ssh-key", help="enrol this machine's SSH key with your cached token; prints its path (ssh -i PATH)"
    )
    ssh_key.add_argument("--gateway", help="the gateway's API URL (default: the last logged in to)")
    ssh_key.add_argument("--forget", action="store_true", help="remove the key, at the gateway and here")
    ssh_key.set_defaults(run=ssh_key_command)

    audit = groups.add_parser("audit", help="the audit trail").add_subparsers(dest="verb", required=True)
    verify = audit.add_parser("verify", help="verify the log offline (exit 1 on the first bad record)")
    verify.add_argument("--dir", help="audit directory (default: DATA_DIR/audit)")
    verify.add_argument(
        "--vkey",
        help="verifier key file (default: DIR/audit.vkey; an auditor should use a pinned copy)",
    )
    verify.add_argument(
        "--allow-unsigned-tail",
        action="store_true",
        help="accept records after the last signed checkpoint (a running or crashed gateway's log); "
        "never records after a clean stop's signed end",
    )
    verify.add_argument(
        "--witness",
        action="append",
        metavar="DIR_OR_URL",
        help="a witness directory or tlog-witness URL: the log must extend its newest checkpoint "
        "(a log rolled back to before it fails); repeatable",
    )
    verify.add_argument(
        "--witness-vkey",
        action="append",
        metavar="KEY_OR_FILE",
        help="a tlog-witness's cosignature key (<name>+<key id>+<base64>, or a file holding it) for "
        "the --witness URLs: a URL witness's answer counts only with a fresh cosignature by it "
        "(without one, a URL witness check fails: an unauthenticated answer proves nothing); repeatable",
    )
    verify.add_argument(
        "--configured-witnesses",
        action="store_true",
        help="also check every witness in the configuration's [audit] witness",
    )
    verify.set_defaults(run=audit_verify)
    resolve = audit.add_parser(
        "resolve-tail",
        help="decide about records after the last signed checkpoint when the gateway refuses to start",
    )
    resolve.add_argument("--dir", help="audit directory (default: DATA_DIR/audit)")
    resolve.add_argument("--vkey", help="verifier key file (default: DIR/audit.vkey; better a pinned copy)")
    decision = resolve.add_mutually_exclusive_group(required=True)
    decision.add_argument(
        "--set-aside",
        action="store_true",
        help="move them to DIR/set-aside/ (the only choice after a clean stop's signed end)",
    )
    decision.add_argument(
        "--adopt",
        action="store_true",
        help="keep them, recorded as written but not signed at the time (not after a signed end)",
    )
    resolve.set_defaults(run=audit_resolve_tail)
    bundle = audit.add_parser(
        "verify-bundle", help="verify a session bundle offline (hoopgw sessions export): no configuration needed"
    )
    bundle.add_argument("bundle")
    bundle.add_argument("--vkey", help="the verifier key file the bundle must be signed by (the operator's audit.vkey)")
    bundle.set_defaults(run=audit_verify_bundle)

    search = audit.add_parser("search", help="find records")
    search.add_argument("--dir", help="audit directory (default: DATA_DIR/audit)")
    search.add_argument("--session")
    search.add_argument("--sub", help="identity subject")
    search.add_argument("--connection")
    search.add_argument("--event", help="record type, e.g. action.start")
    search.add_argument("--since", type=_time, help="RFC 3339 time or a duration ago (15m)")
    search.add_argument("--until", type=_time, help="RFC 3339 time or a duration ago")
    search.add_argument("--json", action="store_true", help="one JSON record per line")
    search.set_defaults(run=audit_search)

    sessions = groups.add_parser("sessions", help="gateway sessions").add_subparsers(dest="verb", required=True)
    listing = sessions.add_parser("list", help="recent sessions, newest first")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--active", action="store_true", help="only sessions still open")
    listing.add_argument("--sub", help="only this identity subject's sessions")
    listing.add_argument("--connection", help="only sessions on this connection")
    listing.add_argument("--since", type=_time, help="started at or after: RFC 3339 time or a duration ago (15m)")
    listing.add_argument("--until", type=_time, help="started before: RFC 3339 time or a duration ago")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(run=sessions_list)

    show = sessions.add_parser("show", help="one session: its store row, counts, audit records and recordings")
    show.add_argument("session", help="the session's id (hoopgw sessions list)")
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.set_defaults(run=sessions_show)

    export = sessions.add_parser("export", help="write a session's evidence bundle (records, proofs, checkpoints, recordings)")
    export.add_argument("session")
    export.add_argument("--out", required=True, help="the bundle's path (a tar file)")
    export.add_argument(
        "--checkpoint", action="store_true",
        help="ask the running gateway to sign a checkpoint first (its records are covered at once)",
    )
    _api_arguments(export, " (for --checkpoint)")
    export.set_defaults(run=sessions_export)

    report = groups.add_parser("evidence", help="evidence per NIST SP 800-53 control, from the audit trail (read-only)")
    report.add_argument("--since", type=_time, help="records at or after: RFC 3339 time or a duration ago (30d)")
    report.add_argument("--until", type=_time, help="records before: RFC 3339 time or a duration ago")
    report.add_argument("--control", action="append", help="only this control (repeatable), e.g. AU-6")
    report.add_argument("--connection", help="only this connection's records (and the gateway's own)")
    report.add_argument(
        "--format", choices=["json", "csv", "html", "oscal"], default="json",
        help="json: the whole document; csv: one row per finding; html: one self-contained report; "
             "oscal: OSCAL 1.1.2 assessment results (JSON)",
    )
    report.add_argument("--out", required=True)
    report.add_argument("--dir", help="audit directory (default: DATA_DIR/audit)")
    report.set_defaults(run=evidence)

    play = groups.add_parser(
        "replay",
        help="replay a session: a terminal from its recording, any session as a transcript of its audit records",
    )
    play.add_argument("session", help="the session's id (hoopgw sessions list)")
    play.add_argument("--dir", help="audit directory (default: DATA_DIR/audit)")
    play.add_argument("--speed", type=float, default=1.0, help="playback speed of a recording (2: twice as fast)")
    play.add_argument("--max-idle", type=float, help="cap each pause of a recording at this many seconds")
    play.add_argument("--transcript", action="store_true", help="the transcript even for a recorded terminal")
    play.add_argument("--play", action="store_true", help="play the recordings of any session (kubectl exec -it)")
    play.add_argument("--json", action="store_true", help="the session's audit records, one per line, in order")
    play.set_defaults(run=replay)

    reviews = groups.add_parser("reviews", help="actions held for approval (the running gateway's API)")
    reviews_verbs = reviews.add_subparsers(dest="verb", required=True)
    for name, help_text, run in (
        ("list", "reviews you requested or may decide, newest first", reviews_list),
        ("show", "one review, whole (JSON)", reviews_show),
        ("approve", "approve a review (with your own token)", reviews_decide),
        ("deny", "deny a review (with your own token; --reason required)", reviews_decide),
    ):
        verb = reviews_verbs.add_parser(name, help=help_text)
        _api_arguments(verb)
        if name == "list":
            verb.add_argument("--state", choices=["pending", "approved", "denied", "expired", "cancelled"])
            verb.add_argument("--json", action="store_true", help="one JSON object per line")
        else:
            verb.add_argument("id")
        if name in ("approve", "deny"):
            verb.add_argument("--reason", required=name == "deny", help="why (recorded in the audit trail)")
        verb.set_defaults(run=run)

    access = groups.add_parser("access", help="just-in-time access grants (the running gateway's API)")
    access_verbs = access.add_subparsers(dest="verb", required=True)
    for name, help_text, run in (
        ("request", "ask for time-bound access to a connection (approved as a review)", access_request),
        ("list", "grants you asked for or may approve, newest first", access_list),
        ("revoke", "end a grant (yours, or one you may approve) and the sessions that used it", access_revoke),
    ):
        verb = access_verbs.add_parser(name, help=help_text)
        _api_arguments(verb)
        if name == "request":
            verb.add_argument("--connection", required=True)
            verb.add_argument("--duration", required=True, help='how long, e.g. "30m", "1h" (at most the rule\'s max_duration)')
            verb.add_argument("--reason", required=True, help="why (shown to approvers, recorded in the audit trail)")
        elif name == "list":
            verb.add_argument("--state", choices=["pending", "active", "denied", "cancelled", "expired", "revoked"])
            verb.add_argument("--json", action="store_true", help="one JSON object per line")
        else:
            verb.add_argument("id")
            verb.add_argument("--reason", help="why (recorded in the audit trail)")
        verb.set_defaults(run=run)

    policy = groups.add_parser("policy", help="policy files").add_subparsers(dest="verb", required=True)
    check = policy.add_parser("check", help="load and validate every policy file")
    check.add_argument("--dir", help="policy folder (default: from the config)")
    check.set_defaults(run=policy_check)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        try:
            code: int = args.run(args)
        except (ConfigError, CommandError, PluginError) as e:
            print(f"hoopgw: {_safe_lines(str(e))}", file=sys.stderr)
            code = 1
        if code:
            # A failure may come from the wrong data dir: say which was used.
            _say_where(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader went away (hoopgw ... | head -1): stop quietly. Python
        # would flush stdout again at exit, and fail again: point it at
        # /dev/null first.  141 is what a shell reports for a program
        # SIGPIPE killed, as `yes | head -1` does.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass  # stdout is not a file (called in-process)
        return 141


if __name__ == "__main__":
    raise SystemExit(main())

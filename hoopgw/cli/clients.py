"""
The stock clients set up for a gateway you logged in to (`hoopgw login`):
`hoopgw psql|ssh|kubectl CONNECTION ...` exec the real client with your
cached token and the gateway's address and TLS trust; `hoopgw config
kubeconfig` and `hoopgw config ssh` write the same settings where kubectl
and ssh read them.

Everything comes from the gateway's C{/.well-known/hoopgw}, fetched over
https or on this machine (as `hoopgw login` does): its listeners' addresses,
the root of its TLS certificate when that is self-signed or private (pinned
in a file beside the token cache, so a client trusts that certificate and
no other), and its SSH host key (pinned in a known_hosts file there).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any, NoReturn

from hoopgw.cli.login import LoginError, _file_name, _private, _request, _secure, cached_token, credentials_dir
from hoopgw.errors import CommandError

__all__ = ["Invocation", "gateway_info", "kubeconfig_entry", "kubectl", "psql", "write_kubeconfig"]

# Bound to every address: the client reaches it the way it reached the API.
_ANY = ("", "0.0.0.0", "::")
# Each wrapper's listener: what it is called in the discovery document and in `[listen]`.
_LISTENER = {"psql": "postgres", "kubectl": "http", "ssh": "ssh"}


def gateway_info(gateway: str) -> dict[str, Any]:
    """The gateway's C{/.well-known/hoopgw}."""
    code, info = _request(_secure(f"{gateway}/.well-known/hoopgw", "a gateway (its API listener as an ssl: endpoint)"))
    if code != 200:
        raise LoginError(f"{gateway}/.well-known/hoopgw answered {code}: is it the gateway's API listener?")
    return info


def _address(gateway: str, info: dict[str, Any], listener: str) -> tuple[str, int]:
    published = (info.get("listeners") or {}).get(listener)
    if not published:
        raise CommandError(f"gateway {gateway} has no {listener} listener ([listen] {listener})")
    host = published.get("host") or ""
    if host in _ANY:
        host = urllib.parse.urlsplit(gateway).hostname or "127.0.0.1"
    return host, int(published["port"])


def _saved(gateway: str, suffix: str, content: str) -> Path:
    """A file beside the gateway's token cache (owner-only folder), rewritten when its content changed."""
    folder = credentials_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    _private(folder, "the credentials folder")
    path = folder / (Path(_file_name(gateway)).stem + suffix)
    if not path.exists() or path.read_text() != content:
        temporary = path.with_suffix(path.suffix + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(content)
        os.replace(temporary, path)
    return path


def _pinned_ca(gateway: str, info: dict[str, Any]) -> Path | None:
    ca = (info.get("tls") or {}).get("ca")
    return _saved(gateway, ".ca.pem", ca) if ca else None


def _server_name(host: str, info: dict[str, Any]) -> str | None:
    """
    The name to check the pinned certificate against when the host the
    client dials is not among its names (a self-signed certificate names
    this machine only): pinned, it is still that certificate or nothing.
    """
    names = (info.get("tls") or {}).get("names") or []
    if host in names or not names:
        return None
    return str(names[0])


class Invocation:
    """A client's argv and environment, ready to exec (or to run, in tests)."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv = argv
        self.env = env

    def exec(self) -> NoReturn:
        program = shutil.which(self.argv[0], path=self.env.get("PATH"))
        if program is None:
            raise CommandError(f"{self.argv[0]} is not installed (not found on PATH)")
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(program, self.argv, self.env)


def psql(gateway: str, connection: str, args: list[str], environ: dict[str, str] | None = None) -> Invocation:
    """
    psql on C{connection}: the token as the password (PGPASSWORD, so it is not
    on a command line others can read), TLS required and checked against the
    pinned root (verify-full when the host is among the certificate's names,
    else verify-ca: still that certificate's key or nothing), else libpq's
    own trust store with verify-full.
    """
    env = dict(os.environ if environ is None else environ)
    info = gateway_info(gateway)
    host, port = _address(gateway, info, "postgres")
    env.update(PGHOST=host, PGPORT=str(port), PGDATABASE=connection, PGPASSWORD=cached_token(gateway))
    ca = _pinned_ca(gateway, info)
    if ca is not None:
        env["PGSSLROOTCERT"] = str(ca)
        env["PGSSLMODE"] = "verify-ca" if _server_name(host, info) else "verify-full"
    else:
        env["PGSSLMODE"] = "verify-full"
    # Not a connection string a user's -d could replace: PGDATABASE names the connection.
    return Invocation(["psql", *args], env)


def kubeconfig_entry(gateway: str, info: dict[str, Any], connection: str) -> dict[str, Any]:
    """
    One connection as kubectl sees it: the server (the http listener and the
    connection's path), the pinned root and server name, and the cached token
    through `hoopgw token exec-credential` (kubectl asks again before expiry).
    """
    host, port = _address(gateway, info, "http")
    authority = f"[{host}]" if ":" in host else host
    cluster: dict[str, Any] = {"server": f"https://{authority}:{port}/{urllib.parse.quote(connection, safe='')}"}
    ca = (info.get("tls") or {}).get("ca")
    if ca:
        import base64

        cluster["certificate-authority-data"] = base64.b64encode(ca.encode()).decode()
        server_name = _server_name(host, info)
        if server_name:
            cluster["tls-server-name"] = server_name
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": ["-m", "hoopgw", "token", "exec-credential", "--gateway", gateway],
            "interactiveMode": "Never",
        }
    }
    return {"cluster": cluster, "user": user}


def kubectl(gateway: str, connection: str, args: list[str], environ: dict[str, str] | None = None) -> Invocation:
    """kubectl on C{connection}, with a kubeconfig of its own beside the token cache (yours is not touched)."""
    env = dict(os.environ if environ is None else environ)
    cached_token(gateway)  # not logged in: say so now, not from inside kubectl's plugin call
    entry = kubeconfig_entry(gateway, gateway_info(gateway), connection)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": connection, "cluster": entry["cluster"]}],
        "users": [{"name": connection, "user": entry["user"]}],
        "contexts": [{"name": connection, "context": {"cluster": connection, "user": connection}}],
        "current-context": connection,
    }
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in connection)
    env["KUBECONFIG"] = str(_saved(gateway, f".{safe}.kubeconfig", json.dumps(config, indent=1) + "\n"))
    return Invocation(["kubectl", *args], env)


def write_kubeconfig(gateway: str, connection: str, *, path: str | None, name: str | None,
                     environ: dict[str, str] | None = None) -> tuple[str, Path | None]:
    """
    Add (or replace) a cluster, user and context named C{name} (default: the
    connection's name) in the user's kubeconfig, through kubectl's own
    C{kubectl config set-*} (it merges and keeps the rest of the file).
    Returns (the context's name, the file given, or None for kubectl's own choice).
    """
    env = dict(os.environ if environ is None else environ)
    cached_token(gateway)
    info = gateway_info(gateway)
    entry = kubeconfig_entry(gateway, info, connection)
    name = name or connection
    cluster, user = entry["cluster"], entry["user"]["exec"]
    target = ["--kubeconfig", path] if path else []
    trust = []
    if "certificate-authority-data" in cluster:
        trust = [f"--certificate-authority={_pinned_ca(gateway, info)}", "--embed-certs=true"]
        if "tls-server-name" in cluster:
            trust.append(f"--tls-server-name={cluster['tls-server-name']}")
    kubectl_program = shutil.which("kubectl", path=env.get("PATH"))
    if kubectl_program is None:
        raise CommandError("kubectl is not installed (not found on PATH): it writes the kubeconfig")

    def config(*step: str, check: bool = True) -> None:
        done = subprocess.run([kubectl_program, "config", *target, *step], env=env, capture_output=True, text=True)
        if check and done.returncode != 0:
            raise CommandError(f"kubectl config {step[0]} failed: {done.stderr.strip() or done.stdout.strip()}")

    # Replaced whole, so nothing of an earlier run (an old CA, a server name) stays.
    config("delete-cluster", name, check=False)
    config("delete-user", name, check=False)
    config("set-cluster", name, f"--server={cluster['server']}", *trust)
    config("set-credentials", name, f"--exec-api-version={user['apiVersion']}", f"--exec-command={user['command']}",
           *(f"--exec-arg={a}" for a in user["args"]), f"--exec-interactive-mode={user['interactiveMode']}")
    config("set-context", name, f"--cluster={name}", f"--user={name}")
    return name, Path(path) if path else None


# -- ssh ----------------------------------------------------------------------------------


def _ssh_settings(gateway: str, info: dict[str, Any]) -> tuple[str, int, str, Path]:
    """
    (host, port, host key alias, known_hosts file): the gateway's SSH host key
    pinned under an alias of its own, so no other key for that address (and
    no entry of the user's own known_hosts) is accepted for it.
    """
    host, port = _address(gateway, info, "ssh")
    host_key = ((info.get("listeners") or {}).get("ssh") or {}).get("host_key")
    if not host_key:
        raise CommandError(f"gateway {gateway} does not publish its SSH host key: is it older than this hoopgw?")
    alias = "hoopgw-" + Path(_file_name(gateway)).stem
    known_hosts = _saved(gateway, ".known_hosts", f"{alias} {host_key}\n")
    return host, port, alias, known_hosts


def ssh(gateway: str, connection: str, args: list[str], environ: dict[str, str] | None = None) -> Invocation:
    """
    ssh to C{connection}: a key of this machine's, enrolled with the gateway
    for the cached token's lifetime, and the gateway's pinned host key.
    ssh reads options after the destination too, so C{args} may hold both
    options and the remote command.
    """
    from hoopgw.cli.sshkey import ensure_ssh_key

    env = dict(os.environ if environ is None else environ)
    host, port, alias, known_hosts = _ssh_settings(gateway, gateway_info(gateway))
    key = ensure_ssh_key(gateway)
    argv = ["ssh", "-p", str(port), "-i", str(key), "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", f"HostKeyAlias={alias}", "-l", connection, host, *args]
    return Invocation(argv, env)


def _quoted(value: str) -> str:
    """One ssh_config argument (double quotes: paths may hold spaces; no % token expansion)."""
    if '"' in value or "\n" in value:
        raise CommandError(f"cannot write {value!r} into an ssh config")
    return '"' + value.replace("%", "%%") + '"'


def ssh_config_block(gateway: str, connections: list[str], *, prefix: str | None = None) -> tuple[str, list[str]]:
    """
    The C{~/.ssh/config} block for C{connections} (their SSH ones): a C{Host}
    per connection (the gateway's address, the connection as the user, the
    pinned host key), then one C{Match ... exec} that enrols this machine's
    key with the cached token each time ssh runs (a refreshed token, a
    restarted gateway) and offers that key only when it was.  No
    ProxyCommand: the gateway is the SSH server.  (block, the aliases).
    """
    import shlex

    from hoopgw.cli.sshkey import ensure_ssh_key

    info = gateway_info(gateway)
    host, port, alias, known_hosts = _ssh_settings(gateway, info)
    key = ensure_ssh_key(gateway)
    prefix = f"{info.get('gateway') or 'hoopgw'}-" if prefix is None else prefix
    aliases = []
    lines = [f"# BEGIN hoopgw {gateway}",
             "# Written by `hoopgw config ssh`: run it again to update this block; edits here are replaced."]
    for connection in connections:
        name = prefix + connection
        if not name or any(c.isspace() or c in "*?!,\"'#%" for c in name):
            raise CommandError(f"{name!r} cannot be an ssh host alias")
        aliases.append(name)
        lines += [f"Host {name}", f"    HostName {host}", f"    Port {port}", f"    User {_quoted(connection)}",
                  f"    HostKeyAlias {alias}", f"    UserKnownHostsFile {_quoted(str(known_hosts))}",
                  "    StrictHostKeyChecking yes"]
    enrol = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "hoopgw", "--quiet", "ssh-key", "--gateway", gateway))
    enrol += " >/dev/null"  # it prints the key's path
    if aliases:
        lines += [f"Match originalhost {','.join(aliases)} exec {_quoted(enrol)}",
                  f"    IdentityFile {_quoted(str(key))}", "    IdentitiesOnly yes"]
    # Back to every host: lines after this block are not part of its last Match.
    lines += ["Match all", f"# END hoopgw {gateway}", ""]
    return "\n".join(lines), aliases


def write_ssh_config(path: Path, gateway: str, block: str) -> None:
    """
    Put C{block} at the top of C{path} (ssh takes the first value it finds
    for a setting, so a C{Host *} below cannot override the connection's
    C{User}), replacing this gateway's earlier block wherever it is.
    """
    begin, end = f"# BEGIN hoopgw {gateway}\n", f"# END hoopgw {gateway}\n"
    text = path.read_text() if path.exists() else ""
    if begin in text and end in text[text.index(begin):]:
        start = text.index(begin)
        stop = text.index(end, start) + len(end)
        text = text[:start] + text[stop:]
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".hoopgw.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(block + text)
    if path.exists():
        os.chmod(temporary, path.stat().st_mode & 0o777)
    os.replace(temporary, path)

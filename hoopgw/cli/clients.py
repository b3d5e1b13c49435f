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

import base64
import contextlib
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any, Mapping, NoReturn

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hoopgw.cli.login import (
    LoginError,
    _file_name,
    _private,
    _request,
    _secure,
    cached_token,
    private_folder,
    write_private,
)
from hoopgw.config import CONNECTION_NAME
from hoopgw.errors import CommandError

__all__ = ["Discovery", "Invocation", "gateway_info", "kubeconfig_entry", "kubectl", "psql", "ssh", "ssh_config_block",
           "write_kubeconfig", "write_ssh_config"]

# Bound to every address: the client reaches it the way it reached the API.
_ANY = ("", "0.0.0.0", "::")
_HOSTNAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?", re.ASCII)
_HOST_KEY = re.compile(r"(?:ssh-ed25519|ecdsa-sha2-nistp(?:256|384|521)|ssh-rsa) [A-Za-z0-9+/]{16,8192}={0,2}", re.ASCII)
# What psql keeps of the caller's PG* environment: the rest (PGSERVICE,
# PGHOSTADDR, PGSSLNEGOTIATION, ...) could send the token elsewhere or in clear.
_PG_KEPT = frozenset({"PGAPPNAME", "PGCLIENTENCODING", "PGCONNECT_TIMEOUT", "PGDATESTYLE", "PGTZ", "PGOPTIONS", "PGUSER"})


def _host(value: object) -> str | None:
    """An IP address or a DNS name, nothing a client could read as an option, a path or a config line."""
    if not isinstance(value, str):
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value if _HOSTNAME.fullmatch(value) else None


@attrs.frozen
class Discovery:
    """
    A gateway's C{/.well-known/hoopgw}, checked: whatever it holds ends up
    in argv, environment variables and config files, so a value that is
    not what it should be (a host that reads as an option or a socket path,
    a line break in a key) refuses the whole document.
    """

    url: str
    name: str
    listeners: Mapping[str, tuple[str, int]]
    ssh_host_key: str | None = None
    ca: str | None = None  # the root to pin (PEM), when the gateway's certificate chain ends in a self-signed one
    names: tuple[str, ...] = ()  # what the gateway's certificate is valid for

    @classmethod
    def parse(cls, url: str, info: Any) -> "Discovery":
        def bad(what: str) -> CommandError:
            return CommandError(f"gateway {url} published an unusable {what}; not using it")

        if not isinstance(info, dict):
            raise bad("discovery document")
        name = info.get("gateway", "hoopgw")
        if not isinstance(name, str) or not CONNECTION_NAME.fullmatch(name):
            raise bad("gateway name")
        here = urllib.parse.urlsplit(url).hostname or "127.0.0.1"
        listeners: dict[str, tuple[str, int]] = {}
        host_key = None
        for listener, published in (info.get("listeners") or {}).items():
            if not isinstance(published, dict):
                raise bad(f"{listener} listener")
            host = published.get("host") or ""
            host = _host(here if host in _ANY else host)
            port = published.get("port")
            if host is None or not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
                raise bad(f"{listener} listener address")
            listeners[str(listener)] = (host, port)
            if listener == "ssh" and "host_key" in published:
                host_key = published["host_key"]
                if not isinstance(host_key, str) or not _HOST_KEY.fullmatch(host_key):
                    raise bad("SSH host key")
        tls = info.get("tls") or {}
        names = tls.get("names") or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise bad("certificate names")
        ca = tls.get("ca")
        if ca is not None:
            try:
                [certificate] = x509.load_pem_x509_certificates(ca.encode("ascii"))
            except (AttributeError, ValueError, UnicodeError):
                raise bad("certificate") from None
            ca = certificate.public_bytes(serialization.Encoding.PEM).decode()
        return cls(url=url, name=name, listeners=listeners, ssh_host_key=host_key, ca=ca,
                   names=tuple(n for n in names if _host(n) is not None))

    def address(self, listener: str) -> tuple[str, int]:
        if listener not in self.listeners:
            raise CommandError(f"gateway {self.url} has no {listener} listener ([listen] {listener})")
        return self.listeners[listener]

    def server_name(self, host: str) -> str | None:
        """
        The name to check the gateway's certificate against when the host
        the client dials is not among its names (a self-signed certificate
        names this machine only; a listener published by its address):
        still a name the certificate must hold, never a weaker check.
        """
        if host in self.names or not self.names:
            return None
        return self.names[0]


def gateway_info(gateway: str) -> Discovery:
    """The gateway's C{/.well-known/hoopgw}, checked."""
    code, info = _request(_secure(f"{gateway}/.well-known/hoopgw", "a gateway (its API listener as an ssl: endpoint)"))
    if code != 200:
        raise LoginError(f"{gateway}/.well-known/hoopgw answered {code}: is it the gateway's API listener?")
    return Discovery.parse(gateway, info)


def _saved(gateway: str, suffix: str, content: str) -> Path:
    """A file beside the gateway's token cache (owner-only folder), rewritten when its content changed."""
    folder = private_folder()
    _private(folder, "the credentials folder")
    path = folder / (Path(_file_name(gateway)).stem + suffix)
    if not path.exists() or path.read_text() != content:
        write_private(path, content)
    return path


def _pinned_ca(published: Discovery) -> Path | None:
    return _saved(published.url, ".ca.pem", published.ca) if published.ca else None


def _hoopgw() -> list[str]:
    """
    How a written config runs this hoopgw: this interpreter, with -P so
    that the directory ssh or kubectl runs in cannot put its own modules
    (a cloned repository's argparse.py) before the standard library's.
    """
    return [sys.executable, "-P", "-m", "hoopgw"]


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
    on a command line others can read), TLS with verify-full against the
    pinned root (or libpq's own root file when none is published).  When the
    host dialled is not among the certificate's names, libpq is told one of
    them as the host and the dialled address as C{hostaddr}: the check stays
    a full one.  The caller's other PG* settings are dropped (a PGSERVICE
    would override the host and the TLS mode).
    """
    caller = os.environ if environ is None else environ
    env = {k: v for k, v in caller.items() if not k.startswith("PG") or k in _PG_KEPT}
    published = gateway_info(gateway)
    host, port = published.address("postgres")
    env.update(PGHOST=host, PGPORT=str(port), PGDATABASE=connection, PGPASSWORD=cached_token(gateway),
               PGSSLMODE="verify-full")
    ca = _pinned_ca(published)
    if ca is not None:
        env["PGSSLROOTCERT"] = str(ca)
        name = published.server_name(host)
        if name is not None:
            env["PGHOST"], env["PGHOSTADDR"] = name, _ip(host, port)
    elif "PGSSLROOTCERT" in caller:
        env["PGSSLROOTCERT"] = caller["PGSSLROOTCERT"]  # the caller's own root for a CA not published
    return Invocation(["psql", *args], env)


def _ip(host: str, port: int) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return str(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0])
    except (OSError, IndexError) as e:
        raise CommandError(f"cannot resolve {host}: {e}") from None


def kubeconfig_entry(published: Discovery, connection: str) -> dict[str, Any]:
    """
    One connection as kubectl sees it: the server (the http listener and the
    connection's path), the pinned root and server name, and the cached token
    through `hoopgw token exec-credential` (kubectl asks again before expiry).
    """
    host, port = published.address("http")
    authority = f"[{host}]" if ":" in host else host
    cluster: dict[str, Any] = {"server": f"https://{authority}:{port}/{urllib.parse.quote(connection, safe='')}"}
    if published.ca:
        cluster["certificate-authority-data"] = base64.b64encode(published.ca.encode()).decode()
        server_name = published.server_name(host)
        if server_name:
            cluster["tls-server-name"] = server_name
    command, *args = _hoopgw()
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": command,
            "args": [*args, "token", "exec-credential", "--gateway", published.url],
            "interactiveMode": "Never",
        }
    }
    return {"cluster": cluster, "user": user}


def kubectl(gateway: str, connection: str, args: list[str], environ: dict[str, str] | None = None) -> Invocation:
    """kubectl on C{connection}, with a kubeconfig of its own beside the token cache (yours is not touched)."""
    env = dict(os.environ if environ is None else environ)
    cached_token(gateway)  # not logged in: say so now, not from inside kubectl's plugin call
    entry = kubeconfig_entry(gateway_info(gateway), connection)
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


def _ours(user: Any) -> bool:
    """Whether a kubeconfig user entry is one this command wrote (it runs hoopgw's exec credential)."""
    exec_ = (user or {}).get("exec") or {}
    return "exec-credential" in (exec_.get("args") or []) and "hoopgw" in (exec_.get("args") or [])


def write_kubeconfig(gateway: str, connection: str, *, path: str | None, name: str | None, force: bool = False,
                     environ: dict[str, str] | None = None) -> tuple[str, Path | None]:
    """
    Add (or replace) a cluster, user and context named C{name} (default: the
    connection's name) in the user's kubeconfig, through kubectl's own
    C{kubectl config set-*} (it merges and keeps the rest of the file).
    Entries of that name this command did not write are kept unless
    C{force}; the current context is left as it was.
    Returns (the context's name, the file given, or None for kubectl's own choice).
    """
    env = dict(os.environ if environ is None else environ)
    cached_token(gateway)
    published = gateway_info(gateway)
    entry = kubeconfig_entry(published, connection)
    name = name or connection
    cluster, user = entry["cluster"], entry["user"]["exec"]
    target = ["--kubeconfig", path] if path else []
    trust = []
    if "certificate-authority-data" in cluster:
        trust = [f"--certificate-authority={_pinned_ca(published)}", "--embed-certs=true"]
        if "tls-server-name" in cluster:
            trust.append(f"--tls-server-name={cluster['tls-server-name']}")
    kubectl_program = shutil.which("kubectl", path=env.get("PATH"))
    if kubectl_program is None:
        raise CommandError("kubectl is not installed (not found on PATH): it writes the kubeconfig")

    def config(*step: str, check: bool = True) -> str:
        done = subprocess.run([kubectl_program, "config", *target, *step], env=env, capture_output=True, text=True)
        if check and done.returncode != 0:
            raise CommandError(f"kubectl config {step[0]} failed: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    try:
        current = json.loads(config("view", "--raw", "-o", "json", check=False) or "{}")
    except ValueError:
        current = {}
    users = {u.get("name"): u.get("user") for u in current.get("users") or [] if isinstance(u, dict)}
    taken = name in users or any(isinstance(e, dict) and e.get("name") == name
                                 for e in (current.get("clusters") or []) + (current.get("contexts") or []))
    if taken and not _ours(users.get(name)) and not force:
        raise CommandError(f"your kubeconfig already has an entry named {name!r} that hoopgw did not write: "
                           "choose another with --name, or replace it with --force")
    # Replaced whole, so nothing of an earlier run (an old CA, a server name) stays.
    config("delete-cluster", name, check=False)
    config("delete-user", name, check=False)
    config("set-cluster", name, f"--server={cluster['server']}", *trust)
    config("set-credentials", name, f"--exec-api-version={user['apiVersion']}", f"--exec-command={user['command']}",
           *(f"--exec-arg={a}" for a in user["args"]), f"--exec-interactive-mode={user['interactiveMode']}")
    config("set-context", name, f"--cluster={name}", f"--user={name}")
    if current.get("current-context") and config("current-context", check=False).strip() != current["current-context"]:
        config("use-context", current["current-context"])
    return name, Path(path) if path else None


# -- ssh ----------------------------------------------------------------------------------


def _ssh_settings(published: Discovery) -> tuple[str, int, str, Path]:
    """
    (host, port, host key alias, known_hosts file): the gateway's SSH host key
    pinned under an alias of its own, so no other key for that address (and
    no entry of the user's own known_hosts) is accepted for it.
    """
    host, port = published.address("ssh")
    if not published.ssh_host_key:
        raise CommandError(f"gateway {published.url} does not publish its SSH host key: is it older than this hoopgw?")
    alias = "hoopgw-" + Path(_file_name(published.url)).stem
    known_hosts = _saved(published.url, ".known_hosts", f"{alias} {published.ssh_host_key}\n")
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
    host, port, alias, known_hosts = _ssh_settings(gateway_info(gateway))
    key = ensure_ssh_key(gateway)
    argv = ["ssh", "-p", str(port), "-i", str(key), "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={_quoted(str(known_hosts))}", "-o", "StrictHostKeyChecking=yes",
            "-o", f"HostKeyAlias={alias}", "-l", connection, host, *args]
    return Invocation(argv, env)


# Characters no ssh_config value may hold: line breaks (also Unicode's), other
# controls, and the quote and backslash its tokenizer reads.
_UNQUOTABLE = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029\"\\\\]")


def _quoted(value: str) -> str:
    """One ssh_config argument (double quotes: paths may hold spaces; no % token expansion)."""
    if _UNQUOTABLE.search(value):
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

    published = gateway_info(gateway)
    host, port, alias, known_hosts = _ssh_settings(published)
    key = ensure_ssh_key(gateway)
    chosen = prefix is not None
    prefix = f"{published.name}-" if prefix is None else prefix
    aliases = []
    lines = [f"# BEGIN hoopgw {gateway}",
             "# Written by `hoopgw config ssh`: run it again to update this block; edits here are replaced."]
    for connection in connections:
        if not CONNECTION_NAME.fullmatch(connection):
            raise CommandError(f"the gateway named a connection {connection!r}, which is not a connection name")
        name = prefix + connection
        if not name or any(c.isspace() or c in "*?!,\"'#%\\" or not c.isprintable() for c in name):
            raise CommandError(f"{name!r} cannot be an ssh host alias")
        if "." in name and not chosen:
            # Above the user's own hosts in the file, an alias that reads as a host name would take its place.
            raise CommandError(f"the alias {name!r} for connection {connection!r} could be a real host's name: "
                               "give --prefix to choose the aliases")
        aliases.append(name)
        lines += [f"Host {name}", f"    HostName {_quoted(host)}", f"    Port {port}", f"    User {_quoted(connection)}",
                  f"    HostKeyAlias {alias}", f"    UserKnownHostsFile {_quoted(str(known_hosts))}",
                  "    StrictHostKeyChecking yes"]
    enrol = " ".join(shlex.quote(a) for a in (*_hoopgw(), "--quiet", "ssh-key", "--gateway", gateway))
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
    C{User}), replacing this gateway's earlier block wherever it is.  A
    symbolic link (dotfiles) is written through, not replaced.
    """
    path = Path(os.path.realpath(path))
    begin, end = f"# BEGIN hoopgw {gateway}\n", f"# END hoopgw {gateway}\n"
    text = path.read_text() if path.exists() else ""
    if begin in text and end in text[text.index(begin):]:
        start = text.index(begin)
        stop = text.index(end, start) + len(end)
        text = text[:start] + text[stop:]
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".hoopgw")
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), path.stat().st_mode & 0o777 if path.exists() else 0o600)
            f.write(block + text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise

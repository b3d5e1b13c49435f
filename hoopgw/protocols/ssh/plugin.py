"""
The SSH front end as an L{IFrontEnd <hoopgw.interfaces.IFrontEnd>} plugin
(C{twisted/plugins/hoopgw_frontends.py} names it): its connection keys, the
C{ssh.*} conditions its actions carry and its listener.
"""

from __future__ import annotations

from hoopgw.config import PreauthLimits
from hoopgw.frontends import FrontEnd
from hoopgw.policy.rules import ConditionKind, ConditionSpec
from hoopgw.protocols.ssh.settings import KEYS, parse_connection

__all__ = ["CONDITIONS", "busy_refusal", "front_end"]

CONDITIONS = (
    ConditionSpec("ssh.commands", ConditionKind.globs, None,
                  "command lines, as parsed from exec requests and shell lines"),
    ConditionSpec("ssh.simple_command", ConditionKind.globs, None,
                  "an exec request that is one plain command (for allow-lists); absent otherwise"),
    ConditionSpec("ssh.forward.destinations", ConditionKind.globs, None,
                  "port-forwarding destinations as host:port"),
    ConditionSpec("ssh.sftp.paths", ConditionKind.globs, None,
                  "paths of an SFTP operation, as sent and in absolute form"),
    ConditionSpec("ssh.sftp.write", ConditionKind.boolean, None,
                  "an SFTP operation that can change files (open for writing, remove, ...)"),
)  # fmt: skip

def busy_refusal(message: str) -> bytes:
    """A line before the version line (RFC 4253 section 4.2 allows them), which ssh prints."""
    return message.encode("utf-8") + b"\r\n"


front_end = FrontEnd(
    kind="ssh",
    description="SSH: ssh, scp and sftp, exec, shells, SFTP and port forwarding",
    factory="hoopgw.protocols.ssh.server.make_front_end",
    parse=parse_connection,
    connection_keys=KEYS,
    conditions=CONDITIONS,
    action_kinds=(
        "ssh.exec", "ssh.shell", "ssh.shell.line", "ssh.subsystem", "ssh.sftp.*",
        "ssh.forward", "ssh.forward.remote", "ssh.agent",
    ),
    default_listener="tcp:12222:interface=127.0.0.1",
    # OpenSSH's LoginGraceTime: a person typing a password or a passphrase.
    preauth=PreauthLimits(timeout=120),
    busy=busy_refusal,
)  # fmt: skip

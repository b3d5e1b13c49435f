"""
The C{twistd hoopgw} plugin: options and L{makeService}.
"""

from __future__ import annotations

import signal
from pathlib import Path

from twisted.python import usage

from hoopgw.config import load, quickstart
from hoopgw.errors import HoopgwError


class Options(usage.Options):
    synopsis = "[--config FILE]"
    longdesc = (
        "Start the hoopgw access gateway.  Without --config it runs on the embedded "
        "quickstart defaults: data under ./hoopgw-data, listeners on 127.0.0.1 only, "
        "a self-signed TLS certificate and a dev token issuer."
    )
    optParameters = [
        ["config", "c", None, "Path to the gateway's TOML configuration file."],
    ]


def makeService(options: Options):
    from twisted.internet import reactor

    from hoopgw.gateway import Gateway

    try:
        config = load(Path(options["config"])) if options["config"] else quickstart()
        gateway = Gateway(config, reactor=reactor)
    except HoopgwError as e:
        # One precise line, no traceback: the operator's file or data
        # directory is at fault, and the message says which and why.
        raise SystemExit(f"hoopgw: {e}")
    # SIGHUP re-reads the policy folder, as operators expect of a daemon.
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(gateway.reload_policy))
    return gateway

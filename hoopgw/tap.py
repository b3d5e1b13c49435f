"""
The C{twistd hoopgw} plugin: options and L{makeService}.
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LegacyLogObserverWrapper,
    LogLevel,
    LogLevelFilterPredicate,
    Logger,
)
from twisted.python import usage

from hoopgw.config import find_config
from hoopgw.errors import HoopgwError

LOG_LEVELS = ("debug", "info", "warn", "error", "critical")


class Options(usage.Options):
    synopsis = "[--config FILE] [--log-level LEVEL]"
    longdesc = (
        "Start the hoopgw access gateway.  The configuration is --config FILE, else the "
        "file $HOOPGW_CONFIG names, else /etc/hoopgw/hoopgw.toml if it exists, else the "
        "embedded quickstart defaults: data under ./hoopgw-data, listeners on 127.0.0.1 "
        "only, a self-signed TLS certificate and a dev token issuer.  The hoopgw admin "
        "command finds it the same way."
    )
    optParameters = [
        [
            "config",
            "c",
            None,
            "Path to the gateway's TOML configuration file (default: $HOOPGW_CONFIG, "
            "else /etc/hoopgw/hoopgw.toml if it exists, else the quickstart defaults).",
        ],
        [
            "log-level",
            None,
            "info",
            "The least severe events written to twistd's log: debug, info, warn, error or "
            "critical.  debug includes Twisted's per-packet events (Conch logs every SSH "
            "window adjustment), which cost throughput.",
        ],
    ]

    def postOptions(self) -> None:
        if self["log-level"] not in LOG_LEVELS:
            raise usage.UsageError(
                f"--log-level: expected one of {', '.join(LOG_LEVELS)}, got {self['log-level']!r}"
            )


def level_filtered(observer: Any, level: str) -> FilteringLogObserver:
    """C{observer} (new or legacy style) behind a filter that drops events below C{level}."""
    if not ILogObserver.providedBy(observer):
        observer = LegacyLogObserverWrapper(observer)
    return FilteringLogObserver(observer, [LogLevelFilterPredicate(LogLevel.levelWithName(level))])


def twistd_observer(twistd_options: Any) -> Any:
    """
    The log observer twistd itself would make from its options (C{--logfile},
    C{--nodaemon}, C{--syslog}, ...), so that filtering it changes nothing else.
    """
    from twisted.scripts import twistd

    # The runner class of the platform, as twistd picks it: private to
    # twistd (a name it imports, not one it exports), so looked up by name.
    runner = getattr(twistd, "_SomeApplicationRunner")
    return runner.loggerFactory(twistd_options)._getLogObserver()


class GatewayRoot(MultiService):
    """
    What the plugin hands twistd: the gateway, and the log level of the
    process.  twistd's L{AppLogger} logs to the application's
    L{ILogObserver} component when there is one (as a C{.tac} file may set),
    so on joining the application this sets one: twistd's usual observer
    behind a level filter.  Without it every debug event is formatted and
    written (~17,000 lines per GB relayed over SSH).  An explicit
    C{twistd --logger} still wins, as it does over any C{.tac} file.
    """

    def __init__(self, gateway: IService, *, level: str = "info", twistd_options: Any = None) -> None:
        MultiService.__init__(self)  # by name: Twisted leaves it unannotated (untyped_calls_exclude, setup.cfg)
        self.gateway = gateway
        self.level = level
        self.twistd_options = twistd_options
        gateway.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> None:
        MultiService.setServiceParent(self, parent)
        options = self.twistd_options
        if options is None or options.get("logger") or self.level == "debug":
            return  # not under twistd, the operator's own observer, or everything wanted
        set_component = getattr(parent, "setComponent", None)
        if set_component is not None and parent.getComponent(ILogObserver, None) is None:
            set_component(ILogObserver, level_filtered(twistd_observer(options), self.level))


def makeService(options: Options) -> GatewayRoot:
    from twisted.internet import reactor

    from hoopgw.gateway import Gateway

    choice = find_config(options["config"])
    try:
        config = choice.load()
        gateway = Gateway(config, reactor=reactor)
    except HoopgwError as e:
        # One precise line, no traceback: the operator's file or data
        # directory is at fault, and the message says which and why.
        raise SystemExit(f"hoopgw: {e}")
    # Logged once logging begins (twistd keeps what was logged before): which
    # file, and why that one, as the admin command says it.
    Logger().info(
        "hoopgw using {config}; data dir {data_dir}",
        config=choice.describe(),
        data_dir=str(config.gateway.data_dir),
    )
    # SIGHUP re-reads the policy folder, as operators expect of a daemon.
    # (The reactor's IReactorFromThreads part, which twisted.internet.reactor
    # is not declared to have: adapted, as Twisted's typing asks.)
    from_threads = IReactorFromThreads(reactor)
    signal.signal(signal.SIGHUP, lambda *_: from_threads.callFromThread(gateway.reload_policy))
    # usage.Options gives a sub-command's options their parent: twistd's own.
    return GatewayRoot(gateway, level=options["log-level"], twistd_options=getattr(options, "parent", None))

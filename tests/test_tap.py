"""
Tests for L{hoopgw.tap}: the C{twistd hoopgw} options and the log level of
the gateway process.
"""

from __future__ import annotations

from pathlib import Path

from twisted.application.service import Application, Service
from twisted.logger import ILogObserver, LogLevel
from twisted.python import usage
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from hoopgw.tap import GatewayRoot, Options


def _twistd(*args: str) -> ServerOptions:
    options = ServerOptions()
    options.parseOptions(list(args))
    return options


def _event(level: LogLevel, text: str) -> dict:
    return {"log_level": level, "log_format": text, "log_time": 0.0, "log_namespace": "test"}


class OptionsTests(SynchronousTestCase):
    def test_defaultInfo(self) -> None:
        """Without C{--log-level} the gateway logs at C{info}."""
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["log-level"], "info")

    def test_debugAvailable(self) -> None:
        options = Options()
        options.parseOptions(["--log-level", "debug"])
        self.assertEqual(options["log-level"], "debug")

    def test_badLevel(self) -> None:
        """An unknown level is refused with the levels expected."""
        e = self.assertRaises(usage.UsageError, Options().parseOptions, ["--log-level", "verbose"])
        self.assertEqual(
            str(e), "--log-level: expected one of debug, info, warn, error, critical, got 'verbose'"
        )


class LogLevelTests(SynchronousTestCase):
    def _filtered(self, level: str, *twistd_args: str):
        application = Application("hoopgw")
        GatewayRoot(Service(), level=level, twistd_options=_twistd(*twistd_args)).setServiceParent(application)
        return application.getComponent(ILogObserver, None)

    def test_debugNotWritten(self) -> None:
        """
        At the default level, twistd's log file (as C{--logfile} names it)
        gets info events and not debug ones: Conch's per-window-adjust
        debug line costs throughput on every SSH transfer.
        """
        path = Path(self.mktemp())
        observer = self._filtered("info", "--nodaemon", "--logfile", str(path))
        self.assertIsNotNone(observer)
        self.addCleanup(lambda: observer._observer._outFile.close())
        observer(_event(LogLevel.debug, "adding 65536 to 0 in channel 0"))
        observer(_event(LogLevel.info, "channel open"))
        observer._observer._outFile.flush()
        text = path.read_text()
        self.assertIn("channel open", text)
        self.assertNotIn("adding 65536", text)

    def test_warnLevel(self) -> None:
        path = Path(self.mktemp())
        observer = self._filtered("warn", "--nodaemon", "--logfile", str(path))
        self.addCleanup(lambda: observer._observer._outFile.close())
        observer(_event(LogLevel.info, "channel open"))
        observer(_event(LogLevel.warn, "something odd"))
        observer._observer._outFile.flush()
        text = path.read_text()
        self.assertIn("something odd", text)
        self.assertNotIn("channel open", text)

    def test_debugLeavesTwistdAlone(self) -> None:
        """With C{--log-level debug} twistd makes its usual observer: everything is written."""
        self.assertIsNone(self._filtered("debug", "--nodaemon"))

    def test_explicitLoggerWins(self) -> None:
        """C{twistd --logger} is the operator's choice: no filter is imposed."""
        self.assertIsNone(self._filtered("info", "--nodaemon", "--logger", "twisted.logger.textFileLogObserver"))

    def test_gatewayIsChild(self) -> None:
        gateway = Service()
        root = GatewayRoot(gateway)
        self.assertIs(gateway.parent, root)
        self.assertIs(root.gateway, gateway)

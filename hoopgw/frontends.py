"""
The installed front ends: Twisted plugins providing L{IFrontEnd}.

They are found as L{twisted.internet.endpoints} finds endpoint parsers:
L{installed} asks L{twisted.plugin.getPlugins} for every L{IFrontEnd} in
C{twisted.plugins}, the package whose C{__path__} takes in each
C{twisted/plugins} folder on C{sys.path}.  So a separately installed
package adds a connection kind by shipping a module in its own
C{twisted/plugins/} folder (with no C{__init__.py} there) holding an object
that provides L{IPlugin} and L{IFrontEnd}; hoopgw's own three are in
C{twisted/plugins/hoopgw_frontends.py}.  L{FrontEnd} is such an object made
from its parts.

The configuration (C{[[connections]]}, C{[listen]}, C{[preauth]}), the
policy's conditions and the gateway's listeners all ask L{installed}, so
they agree on which kinds exist.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from attrs import field, frozen
from twisted.internet.interfaces import IProtocolFactory
from twisted.logger import ILogObserver, LogEvent, Logger, globalLogPublisher
from twisted.plugin import IPlugin, getPlugins
from twisted.python.failure import Failure
from twisted.python.reflect import namedAny
from zope.interface import implementer, provider
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from hoopgw.config import PREAUTH_KEYS, PreauthLimits, Table
from hoopgw.errors import PluginError
from hoopgw.errors import quote as _quote
from hoopgw.interfaces import IFrontEnd
from hoopgw.policy.rules import ConditionSpec, register_condition

if TYPE_CHECKING:
    from hoopgw.gateway import GatewayContext

__all__ = ["FrontEnd", "FrontEnds", "RESERVED_KINDS", "installed"]

log = Logger()

#: Names a front end's kind may not take: C{[listen] api} is the admin API's,
#: and C{[preauth]} holds its own keys beside the C{[preauth.<kind>]} tables.
RESERVED_KINDS = ("api", *PREAUTH_KEYS)

# A kind is a TOML bare key, a metrics label value and part of messages.
_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")


def _strs(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _specs(value: Iterable[ConditionSpec]) -> tuple[ConditionSpec, ...]:
    return tuple(value)


@implementer(IPlugin, IFrontEnd)
@frozen
class FrontEnd:
    """
    An L{IFrontEnd} from its parts, as C{ServiceMaker} is an
    C{IServiceMaker}: what a plugin module instantiates.

    @ivar factory: the dotted name of a callable taking the
        L{hoopgw.gateway.GatewayContext} and returning the listener's
        factory (L{IFrontEnd.build}).  A name, imported only when the
        gateway builds the listener, so that finding the plugins (which
        C{twistd} and the admin command do too) imports no protocol code.
    @ivar parse: L{IFrontEnd.parse_connection}.
    @ivar busy: L{IFrontEnd.busy_refusal}; C{None} for a plain close.
    """

    kind: str
    description: str
    factory: str
    parse: Callable[[Table], tuple[str, Any]]
    connection_keys: tuple[str, ...] = field(default=(), converter=_strs)
    conditions: tuple[ConditionSpec, ...] = field(default=(), converter=_specs)
    action_kinds: tuple[str, ...] = field(default=(), converter=_strs)
    default_listener: str | None = None
    preauth: PreauthLimits = PreauthLimits()
    busy: Callable[[str], bytes] | None = None

    def busy_refusal(self, message: str) -> bytes:
        return self.busy(message) if self.busy is not None else b""

    def parse_connection(self, table: Table) -> tuple[str, Any]:
        return self.parse(table)

    def build(self, context: GatewayContext) -> IProtocolFactory:
        factory: IProtocolFactory = namedAny(self.factory)(context)
        return factory


class FrontEnds(Mapping[str, IFrontEnd]):
    """
    Front ends by kind (sorted), checked to be usable together.

    @ivar names: the plugin (module, attribute and file) of each kind, for messages.
    @ivar conditions: every front end's policy conditions, by name.
    @ivar broken: plugin files that could not be loaded, each with why:
        whatever kinds they meant to add are missing, and messages about an
        unknown kind say so (L{hint}).
    """

    def __init__(
        self,
        front_ends: Iterable[IFrontEnd] = (),
        *,
        names: Mapping[int, str] | None = None,
        broken: Iterable[str] = (),
    ) -> None:
        """
        @param names: the plugin's name by C{id()} of each front end, for
            messages; C{repr()} for the others.
        @raise PluginError: naming the plugins, if one does not provide
            L{IFrontEnd}, has a malformed or reserved kind, or claims a kind
            or a condition another one claims.
        """
        names = names or {}
        by_kind: dict[str, IFrontEnd] = {}
        owners: dict[str, str] = {}
        conditions: dict[str, ConditionSpec] = {}
        condition_owners: dict[str, str] = {}
        for front_end in front_ends:
            name = names.get(id(front_end)) or repr(front_end)
            try:
                verifyObject(IFrontEnd, front_end)
            except Invalid as e:
                raise PluginError(f"plugin {name} does not provide IFrontEnd: {e}") from None
            kind = front_end.kind
            if not isinstance(kind, str) or not _KIND.match(kind):
                raise PluginError(
                    f"plugin {name}: expected a kind of lower-case letters, digits and \"_\", "
                    f"starting with a letter, got {kind!r}"
                )
            if kind in RESERVED_KINDS:
                why = "[listen] api is the admin API's" if kind == "api" else "a key of [preauth] itself"
                raise PluginError(f"plugin {name}: the kind {_quote(kind)} is reserved ({why})")
            if kind in by_kind:
                if by_kind[kind] is front_end:
                    continue  # one object named by two modules: one front end
                first, second = sorted((owners[kind], name))
                raise PluginError(
                    f"two plugins claim the connection kind {_quote(kind)}: {first} and {second}; "
                    "uninstall one of them"
                )
            default = front_end.default_listener
            if default is not None and not isinstance(default, str):
                raise PluginError(f"plugin {name}: expected an endpoint string or None as default_listener, got {default!r}")
            for spec in front_end.conditions:
                if not isinstance(spec, ConditionSpec):
                    raise PluginError(f"plugin {name}: expected ConditionSpec values as conditions, got {spec!r}")
                if condition_owners.get(spec.name, name) != name:
                    first, second = sorted((condition_owners[spec.name], name))
                    raise PluginError(
                        f"two plugins claim the policy condition {_quote(spec.name)}: {first} and {second}"
                    )
                try:
                    register_condition(
                        spec.name, spec.kind, case=spec.case, description=spec.description, conditions=conditions
                    )
                except ValueError as e:
                    raise PluginError(f"plugin {name}: {e}") from None
                condition_owners[spec.name] = name
            by_kind[kind] = front_end
            owners[kind] = name
        self._by_kind = dict(sorted(by_kind.items()))
        self.names = owners
        self.conditions: Mapping[str, ConditionSpec] = conditions
        self.broken = tuple(broken)

    def __getitem__(self, kind: str) -> IFrontEnd:
        return self._by_kind[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_kind)

    def __len__(self) -> int:
        return len(self._by_kind)

    def __repr__(self) -> str:
        return f"<FrontEnds {', '.join(self._by_kind) or '(none)'}>"

    def hint(self) -> str:
        """
        The end of a message about a kind that is not installed: C{""}, or
        which plugins could not be loaded (the kind may be theirs).
        """
        if not self.broken:
            return ""
        return "; these plugins could not be loaded: " + "; ".join(self.broken)


def _plugin_names(package: ModuleType) -> dict[int, str]:
    """
    The plugin name (C{twisted.plugins.MODULE.ATTRIBUTE (FILE)}) of each
    front end in the plugin modules loaded so far, by C{id()}: what
    L{getPlugins} yields carries no name of its own.
    """
    prefix = package.__name__ + "."
    names: dict[int, str] = {}
    for module_name, module in list(sys.modules.items()):
        if module is None or not module_name.startswith(prefix):
            continue
        where = getattr(module, "__file__", None)
        for attribute, value in list(vars(module).items()):
            if IFrontEnd.providedBy(value):
                names.setdefault(id(value), f"{module_name}.{attribute}" + (f" ({where})" if where else ""))
    return names


def _describe(failure: Failure, folders: set[str]) -> str:
    """Which plugin file a failure to load comes from (the innermost frame in a plugin folder), and why."""
    files = [frame[1] for frame in failure.frames]
    if isinstance(failure.value, SyntaxError) and failure.value.filename:
        files.append(failure.value.filename)
    where = next(
        (f for f in reversed(files) if os.path.dirname(os.path.abspath(f)) in folders),
        "a module of twisted.plugins",
    )
    return f"{where}: {type(failure.value).__name__}: {failure.getErrorMessage()}"


def _discover(package: ModuleType) -> FrontEnds:
    # getPlugins logs, and skips, a plugin module that raises on import
    # (Twisted's own traceback goes to the log): collect those to say
    # which file, in the warning and in messages about unknown kinds.
    failures: list[Failure] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        # (log.err's legacy events carry "failure"; new-style ones "log_failure".)
        failure = event.get("log_failure", event.get("failure"))
        if isinstance(failure, Failure):
            failures.append(failure)

    globalLogPublisher.addObserver(observe)
    try:
        found = list(getPlugins(IFrontEnd, package))
    finally:
        globalLogPublisher.removeObserver(observe)
    folders = {os.path.abspath(folder) for folder in package.__path__}
    broken = tuple(dict.fromkeys(_describe(failure, folders) for failure in failures))
    for problem in broken:
        log.warn(
            "hoopgw: a plugin could not be loaded; the front ends it may hold are not installed: {problem}",
            problem=problem,
        )
    return FrontEnds(found, names=_plugin_names(package), broken=broken)


_found: tuple[tuple[str, ...], FrontEnds] | None = None


def installed(package: ModuleType | None = None) -> FrontEnds:
    """
    The front ends installed: every L{IFrontEnd} plugin in C{package}
    (C{twisted.plugins} by default), by kind.

    Looked up once per process, and again only when the package's
    C{__path__} changes: the set of kinds is fixed at start-up, and
    configuration loads (the tests make thousands) cost no scan.  A plugin
    module that raises on import is logged, named, and left out (its kinds
    are then unknown, and messages about them name it); an unwritable
    plugin cache (C{dropin.cache}) only costs a rescan, as Twisted logs.

    @raise PluginError: see L{FrontEnds}.
    """
    global _found
    if package is None:
        import twisted.plugins

        package = twisted.plugins
    key = (package.__name__, *package.__path__)
    if _found is None or _found[0] != key:
        _found = (key, _discover(package))
    return _found[1]

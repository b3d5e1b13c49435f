"""
The Redis front end as an L{IFrontEnd <hoopgw.interfaces.IFrontEnd>}
plugin (C{twisted/plugins/hoopgw_redis.py} names it): its connection keys,
the C{redis.*} conditions its actions carry and its listener.

Finding plugins (C{twistd}, the admin command) imports this module, so it
imports only the settings and the conditions; the protocol code is named
by C{factory} and imported when the gateway builds the listener.
"""

from __future__ import annotations

from hoopgw.frontend import FrontEnd

from hoopgw_redis.policy import CONDITIONS
from hoopgw_redis.settings import KEYS, parse_connection

__all__ = ["DEFAULT_LISTENER", "front_end"]

# Loopback only, as every default listener.  A tcp: endpoint, with TLS from
# the first byte done by the factory with the gateway's own certificate (as
# the HTTP listener does): an ssl: endpoint string would have to name the
# certificate's files, which only the gateway knows at start-up ([tls], or
# the one it generates).  Redis has no STARTTLS: redis-cli --tls and every
# client's TLS option speak TLS at once.  16379: Redis's port, prefixed as
# hoopgw's other defaults are (15432, 12222, 18443).
DEFAULT_LISTENER = "tcp:16379:interface=127.0.0.1"

front_end = FrontEnd(
    kind="redis",
    description="Redis: redis-cli, redis-py and every RESP2/RESP3 client (an example installed apart from hoopgw)",
    factory="hoopgw_redis.frontend.make_front_end",
    parse=parse_connection,
    connection_keys=KEYS,
    conditions=CONDITIONS,
    action_kinds=("redis.*",),
    default_listener=DEFAULT_LISTENER,
)

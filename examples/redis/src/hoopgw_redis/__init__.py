"""
A Redis front end for hoopgw, installed apart from it (C{pip install
examples/redis}): the proof of issue 16 that a front end hoopgw does not
know can be written on its library API.

  - L{hoopgw_redis.resp}: a sans-IO RESP2/RESP3 codec;
  - L{hoopgw_redis.relay}: one client connection's state, sans I/O;
  - L{hoopgw_redis.frontend}: the Twisted glue (factory, client, target leg, catalog);
  - L{hoopgw_redis.commands}: the target's COMMAND INFO and key specs;
  - L{hoopgw_redis.actions}: a command as an action (kind, text, facts);
  - L{hoopgw_redis.policy}: the C{redis.commands} and C{redis.keys} conditions;
  - L{hoopgw_redis.settings}: a connection's settings and their parsing;
  - L{hoopgw_redis.masking}: replies through the session's masks by detector;
  - L{hoopgw_redis.plugin}: the front end as hoopgw finds it (C{twisted/plugins/hoopgw_redis.py}).
"""

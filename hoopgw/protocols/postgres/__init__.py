"""
The PostgreSQL front end: psql and friends connect to the gateway, which
authenticates them with a token-as-password over TLS, connects to the real
server with the connection's own credentials, and relays, audits and polices
every statement.

L{hoopgw.protocols.postgres.codec} is the sans-IO wire codec (bytes in,
messages out; messages in, bytes out) that the rest is built on.
"""

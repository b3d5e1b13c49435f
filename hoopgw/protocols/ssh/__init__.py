"""
The SSH front end: ssh, scp and sftp connect to the gateway, which
authenticates them, connects to the target with the connection's own key
(its host key pinned), and relays, audits and polices exec requests, shell
lines and SFTP operations.

L{hoopgw.protocols.ssh.sftp} is the sans-IO SFTP (version 3) codec and the
audit tracker that sits between the client's C{sftp} subsystem channel and
the target's: bytes in, packets out; client requests out as actions to
decide, server replies out as their outcomes.
"""

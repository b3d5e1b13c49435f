"""hoopgw's front ends (PostgreSQL, SSH, HTTP): IFrontEnd plugins, found by hoopgw.frontends.installed()."""

from hoopgw.protocols.http.plugin import front_end as http
from hoopgw.protocols.postgres.plugin import front_end as postgres
from hoopgw.protocols.ssh.plugin import front_end as ssh

__all__ = ["http", "postgres", "ssh"]

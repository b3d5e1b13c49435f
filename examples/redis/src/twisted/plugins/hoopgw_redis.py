"""hoopgw's Redis front end (examples/redis), found by hoopgw.frontends.installed()."""

from hoopgw_redis.plugin import front_end as redis

__all__ = ["redis"]

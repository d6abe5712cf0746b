"""Fleet tests run against real Debian redis-server processes (tests/support/redis_servers.py)."""

from tests.support.redis_servers import redis_cluster, redis_server, redis_unix_server  # noqa: F401 (fixtures)

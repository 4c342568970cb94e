"""Private Redis servers and clusters with RedisJSON, started for tests and the demo."""

from streamstore.testing._cli import main
from streamstore.testing.cluster import RedisClusterServer
from streamstore.testing.server import RedisServer, find_rejson_module, redis_url_for_tests

__all__ = [
    "RedisClusterServer",
    "RedisServer",
    "find_rejson_module",
    "main",
    "redis_url_for_tests",
]

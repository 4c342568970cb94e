"""Clients for the tests' Redis, a single server or a cluster, made from its URL."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import redis as redis_sync
from redis.cluster import ClusterNode, RedisCluster

from streamstore.connection import Client, RedisSettings

#: Set to 1 to run the suite against a local 3-master Redis Cluster instead of one server.
CLUSTER_SWITCH = "STREAMSTORE_TEST_CLUSTER"


def cluster_requested() -> bool:
    """Tell whether this test run is against a Redis Cluster."""
    return os.environ.get(CLUSTER_SWITCH, "") not in ("", "0")


def is_cluster_url(url: str) -> bool:
    """Tell whether ``url`` names a Redis Cluster (``redis+cluster://``)."""
    return urlsplit(url).scheme.endswith("+cluster")


def async_client(url: str, *, decode: bool = False) -> Client:
    """An asyncio client for ``url``: streamstore's own way of making one."""
    return RedisSettings(url=url, decode_responses=decode).client()


def sync_client(url: str, *, decode: bool = True) -> redis_sync.Redis | RedisCluster:
    """A sync client for ``url`` (a cluster client for a ``redis+cluster://`` URL)."""
    if not is_cluster_url(url):
        return redis_sync.Redis.from_url(url, decode_responses=decode)
    hosts = urlsplit(url).netloc.rpartition("@")[2].split(",")
    seeds = [ClusterNode(host, int(port)) for host, _, port in (h.rpartition(":") for h in hosts)]
    return RedisCluster(startup_nodes=seeds, decode_responses=decode)

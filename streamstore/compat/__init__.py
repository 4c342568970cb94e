"""Compatibility modules: the seed libraries' import names, so their code moves by one line.

``from streamstore.compat.pydantic_redis import Model, RedisConfig, Store`` stands in for
``pydantic_redis.asyncio``; ``from streamstore.compat.pydantic_aioredis import AutoModel, Model,
RedisConfig, Store`` for ``pydantic_aioredis``. See the migration guide in the docs.
"""

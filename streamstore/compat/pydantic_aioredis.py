"""pydantic-aioredis's names on streamstore: ``Store``, ``RedisConfig``, ``Model``, ``AutoModel``.

``Model`` saves only when told to (``insert``), unless ``_auto_save`` / ``_auto_sync`` say
otherwise; ``AutoModel`` saves on construction and syncs every assignment.
"""

from streamstore.autosave import AutoModel
from streamstore.autosave import AutoSaving as Model
from streamstore.store import RedisConfig, Store

__all__ = ["AutoModel", "Model", "RedisConfig", "Store"]

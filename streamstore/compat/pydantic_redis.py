"""pydantic-redis's names on streamstore: ``Store``, ``RedisConfig`` and ``Model`` (asyncio API).

``Model`` is `streamstore.table.TableModel`: records named by ``_primary_key_field`` with the
class methods ``insert``, ``update``, ``select`` and ``delete``, every write an event.
"""

from streamstore.store import RedisConfig, Store
from streamstore.table import TableModel as Model

__all__ = ["Model", "RedisConfig", "Store"]

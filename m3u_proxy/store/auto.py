"""Pick the store from the configuration: Redis when ``storage.redis_url`` is set
(several instances share it), else SQLite under the data dir (one instance).

The same shape as uvicorn's ``loops/auto.py``: callers ask for "the store" and never
name an implementation.
"""

from m3u_proxy.config import Config
from m3u_proxy.store.base import Cluster, Store
from m3u_proxy.store.redis import RedisStore
from m3u_proxy.store.redis_leases import RedisLedger
from m3u_proxy.store.sqlite import SqliteStore

DB_NAME = "m3u-proxy.sqlite3"


async def open_store(
    config: Config, instance_id: str
) -> tuple[Store, Cluster | None, RedisLedger | None]:
    """The opened store; with several instances also the cluster channel and the
    provider slot ledger they share (alone, the providers package counts in memory)."""
    storage = config.storage
    if storage.redis_url:
        shared = await RedisStore.open(storage.redis_url, storage.redis_prefix, instance_id)
        return shared, shared, RedisLedger.on(shared)
    return await SqliteStore.open(config.data_path / DB_NAME), None, None

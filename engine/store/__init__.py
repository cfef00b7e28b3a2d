"""Step 4: durable records. `base` is the interface, `sqlite` the embedded default, `couchbase` production."""
from __future__ import annotations

from engine.config import StoreSection
from engine.store.base import Store


def open_store(cfg: StoreSection, hot_path: bool = False, writer: bool = False) -> Store:
    """hot_path: the engine's own connection (SQLite: checkpoints are the engine's to run);
    writer: the store writer process's (commits batches only; never touches the intent log)."""
    if cfg.kind == "sqlite":
        from engine.store.sqlite import SqliteStore

        return SqliteStore(cfg.path, checkpoint_in_background=hot_path or writer, intent_log=not writer)
    from engine.store.couchbase import CouchbaseStore

    return CouchbaseStore.from_config(cfg)

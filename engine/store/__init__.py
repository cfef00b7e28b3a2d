"""Step 4: durable records. `base` is the interface, `sqlite` the embedded default, `couchbase` production."""
from __future__ import annotations

from engine.config import StoreSection
from engine.store.base import Store


def open_store(cfg: StoreSection, role: str = "reader") -> Store:
    """role: who opens it - "engine" (its hot path), "background" (the engine's outbox process),
    "writer" (the store writer process) or "reader" (anyone else); see SqliteStore."""
    if cfg.kind == "sqlite":
        from engine.store.sqlite import SqliteStore

        return SqliteStore(cfg.path, role=role)
    from engine.store.couchbase import CouchbaseStore

    return CouchbaseStore.from_config(cfg, role)

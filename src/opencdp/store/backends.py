"""Which back-end serves a database URL: chosen by its scheme, imported only when used.

The back-ends import ``base``; naming them here by module path (not importing them at
the top) keeps the package free of import cycles and loads only the driver in use.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from opencdp.store.base import Store, StoreObserver
from opencdp.store.guarded_reads import ReadLimits

#: URL scheme → the module and class of its store.
BACKENDS = {
    "sqlite": ("opencdp.store.sqlite.store", "SQLiteStore"),
    "postgresql": ("opencdp.store.postgres.store", "PostgresStore"),
    "postgres": ("opencdp.store.postgres.store", "PostgresStore"),
}


def open_store(
    url: str,
    *,
    batch_max: int = 2000,
    queue_max: int = 20000,
    unsafe_ack_before_commit: bool = False,
    read_limits: ReadLimits | None = None,
    observers: Sequence[StoreObserver] = (),
) -> Store:
    """The store for a database URL: ``sqlite:///path`` or ``postgresql://…``.

    ``batch_max`` bounds the calls in one group commit; ``queue_max`` the calls waiting
    for one (past it, writes are refused with 503 instead of queueing without limit).
    ``unsafe_ack_before_commit`` is for the crash harness's negative control only.
    ``read_limits``: each read's time budget and one workspace's readers at once.
    ``observers`` are told of each commit (``base.StoreObserver``).
    """
    scheme = url.partition(":")[0]
    if scheme not in BACKENDS or ":" not in url:
        raise ValueError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://…")
    module, name = BACKENDS[scheme]
    store_class: type[Store] = getattr(importlib.import_module(module), name)
    return store_class.from_url(
        url,
        batch_max=batch_max,
        queue_max=queue_max,
        ack_before_commit=unsafe_ack_before_commit,
        read_limits=read_limits,
        observers=observers,
    )


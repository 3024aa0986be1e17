"""Storage back-ends behind one contract (``base.Store``), opened by URL (``backends``)."""

from opencdp.store.backends import open_store
from opencdp.store.base import Store

__all__ = ["Store", "open_store"]

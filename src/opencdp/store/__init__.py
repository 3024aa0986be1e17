"""Storage back-ends behind one contract (``base.Store``)."""

from opencdp.store.base import Store, open_store

__all__ = ["Store", "open_store"]

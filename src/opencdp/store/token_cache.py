"""Token records cached until a revocation, so requests run no token query.

A token query on every request would cost a SQLite call on the event loop, and a
GIL hand-over to the store's threads, which may keep it for a whole switch interval.
So each record is cached with the revocation count current when it was read. The
count lives in a small file beside the database file (``<db>-revocations``, named by
the file's real path, whichever path opened it), mapped into memory: reading it is a
memory load, with no system call and no GIL hand-over.
Every revocation, by any process (``opencdp tokens revoke``, another server), bumps
the count after its commit, so the next request reads the token again: revocation
takes effect at once. Unknown tokens are never cached, so a new token works at once.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct

from opencdp.models import TokenRecord

_MAX_ENTRIES = 10_000
_COUNT = struct.Struct("<Q")


class TokenCache:
    def __init__(self) -> None:
        self._records: dict[str, tuple[int, TokenRecord]] = {}

    def get(self, token_id: str, version: int) -> TokenRecord | None:
        """The record read at revocation count ``version``, if that is still the count."""
        entry = self._records.get(token_id)
        if entry is None or entry[0] != version:
            return None
        return entry[1]

    def put(self, record: TokenRecord, version: int) -> None:
        if len(self._records) >= _MAX_ENTRIES:
            self._records.clear()
        self._records[record.token_id] = (version, record)

    def forget(self, token_id: str) -> None:
        self._records.pop(token_id, None)


class RevocationCount:
    """The shared revocation count of one database, read through a memory map."""

    def __init__(self, path: str) -> None:
        fd = _open_sized(path)
        try:
            self._map = mmap.mmap(fd, _COUNT.size, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)

    def value(self) -> int:
        return int(_COUNT.unpack_from(self._map)[0])

    def close(self) -> None:
        self._map.close()


def revocations_path(db_path: str) -> str:
    """The count file of the database at ``db_path``: beside the file itself, so every
    path to it (a symlink, a relative path, a linked directory) shares one count."""
    return os.path.realpath(db_path) + "-revocations"


def bump_revocations(path: str) -> None:
    """Add one to the count (under a file lock, so concurrent revocations all count)."""
    fd = _open_sized(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        current = _COUNT.unpack(os.pread(fd, _COUNT.size, 0))[0]
        os.pwrite(fd, _COUNT.pack(current + 1), 0)
    finally:
        os.close(fd)  # closing releases the lock


def _open_sized(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if os.fstat(fd).st_size < _COUNT.size:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_size < _COUNT.size:
            os.pwrite(fd, bytes(_COUNT.size), 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
    return fd

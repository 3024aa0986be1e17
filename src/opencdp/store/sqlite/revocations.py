"""The revocation count of one SQLite database, shared by every process that opens it.

The count lives in a small file beside the database file (``<db>-revocations``, named
by the file's real path, whichever path opened it), mapped into memory: reading it is
a memory load, with no system call and no GIL hand-over, cheap enough to ask on every
request. Every revocation, by any process (``opencdp tokens revoke``, another
server), adds one after its commit, so a token record read before the commit no
longer matches the count and is read again: a revocation takes effect at once.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct

_COUNT = struct.Struct("<Q")


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

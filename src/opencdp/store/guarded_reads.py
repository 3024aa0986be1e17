"""What one read may cost: a time budget, and a cap on one workspace's reads at once.

Both stores run every read through ``ReadLimits.lane`` (a workspace holds at most
``per_workspace`` readers; the rest wait, at most the budget, so one tenant's heavy
queries leave readers free for everyone else) and end a query that runs past the
budget with ``ReadTimedOut``: SQLite through a progress handler on the reader
connection (``sqlite.reads.deadline``), PostgreSQL through ``statement_timeout``
(``postgres.reads.snapshot``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from opencdp.config import Settings
from opencdp.errors import Unavailable
from opencdp.models import Workspace

_HINT = (
    "a filter on a property path that is not declared scans the workspace's events: "
    "declare it with `opencdp properties index PATH`, or narrow the query (startTime/endTime)"
)


class ReadTimedOut(Unavailable):
    """A read ran past its time budget (503: the same query will not get cheaper)."""

    def __init__(self, budget_ms: int) -> None:
        super().__init__(f"the read ran past its time budget of {budget_ms} ms; {_HINT}")


class WorkspaceReadsBusy(Unavailable):
    def __init__(self, cap: int) -> None:
        super().__init__(
            f"this workspace already runs {cap} reads at once (the cap) and none ended "
            f"within the read time budget; {_HINT}"
        )


@dataclass
class ReadLimits:
    """``timeout_ms``: a read's budget; ``per_workspace``: one workspace's readers at once."""

    timeout_ms: int = Settings.read_timeout_ms
    per_workspace: int = Settings.workspace_reads
    _lanes: dict[Workspace, _Lane] = field(default_factory=dict, repr=False)

    @property
    def seconds(self) -> float:
        return self.timeout_ms / 1000

    @asynccontextmanager
    async def lane(self, workspace: Workspace) -> AsyncIterator[None]:
        """Hold one of the workspace's readers; 503 when none frees up within the budget."""
        lane = self._lanes.get(workspace)
        if lane is None:
            lane = self._lanes[workspace] = _Lane(asyncio.Semaphore(self.per_workspace))
        lane.users += 1
        try:
            try:
                async with asyncio.timeout(self.seconds):
                    await lane.slots.acquire()
            except TimeoutError:
                raise WorkspaceReadsBusy(self.per_workspace) from None
            try:
                yield
            finally:
                lane.slots.release()
        finally:
            lane.users -= 1
            if lane.users == 0:  # idle: forget it, so the table holds only busy workspaces
                del self._lanes[workspace]

    def busy(self, workspace: Workspace) -> int:
        """Reads of ``workspace`` holding or waiting for a reader now (for tests and metrics)."""
        lane = self._lanes.get(workspace)
        return 0 if lane is None else lane.users


@dataclass
class _Lane:
    slots: asyncio.Semaphore
    users: int = 0

"""Retention: the day partitions of the tables that grow with traffic (made ahead, dropped when
expired) and the deletes left for the tables not partitioned yet."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

from relayforge.stores.base import Q, Store

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Partition:
    parent: str  # the partitioned table, e.g. webhook_inbox
    name: str  # in the schema `partitions`, e.g. webhook_inbox_20261206
    starts_at: dt.datetime | None  # None: holds everything before ends_at (the first one)
    ends_at: dt.datetime | None  # None: open-ended
    detaching: bool  # a detach was interrupted: it is finished before the drop


class RetentionStore(Store):
    """Partitions and deletes. The prune runs on a connection of its own that holds the
    retention lock (`lock`/`unlock`); a partition's detach runs outside any transaction."""

    async def lock(self) -> bool:
        """False while another process prunes."""
        return bool(await self._db.fetchval(Q["retention_lock"]))

    async def unlock(self) -> None:
        await self._db.fetchval(Q["retention_unlock"])

    async def ensure_partitions(self, *, first: dt.date, last: dt.date
                                ) -> list[tuple[str, dt.date]]:
        """Every partitioned table's partitions for the days first..last: the (table, day)
        pairs made now."""
        return [(r["parent"], r["day"]) for r in await self._db.fetch(
            Q["partitions_ensure"], first, last)]

    async def ensure_generations(self, *, table: str, days: Sequence[dt.date], span_days: int
                                 ) -> list[dt.date]:
        """The partitions of `table` (kept in generations of `span_days` days) holding `days`:
        the days whose partition was made now."""
        return [r["day"] for r in await self._db.fetch(
            Q["generations_ensure"], table, list(days), span_days)]

    async def partitions(self) -> list[Partition]:
        return [Partition(**dict(r)) for r in await self._db.fetch(Q["partitions_list"])]

    async def oldest_rows(self) -> dict[str, dt.datetime | None]:
        """When each partitioned table's oldest row was written."""
        return {r["parent"]: r["oldest"] for r in await self._db.fetch(Q["partitions_oldest_rows"])}

    async def inbox_partition_in_use(self, partition: Partition) -> bool:
        """A job still reads its body from one of the partition's rows."""
        return bool(await self._db.fetchval(Q["inbox_partition_in_use"], partition.starts_at,
                                            partition.ends_at))

    async def drop(self, partition: Partition) -> None:
        """Detach (concurrently: writes never wait) and drop."""
        names = {"parent": _identifier(partition.parent), "name": _identifier(partition.name)}
        if not partition.detaching:
            await self._db.execute(Q["partition_detach"].format(**names))
        else:
            await self._db.execute(Q["partition_detach_finalize"].format(**names))
        await self._db.execute(Q["partition_drop"].format(**names))

    async def delete_expired(self, *, jobs_days: int, outbox_days: int) -> dict[str, int]:
        """The tables not partitioned yet: rows deleted per table."""
        steps = (("outbox_messages", "outbox_prune_sent", (outbox_days,)),
                 ("jobs", "prune_jobs", (jobs_days,)),
                 ("tenant_daily_quota_usage", "prune_quota", ()))
        deleted = {}
        for table, query, args in steps:
            status = await self._db.execute(Q[query], *args)  # "DELETE <n>"
            deleted[table] = int(status.rsplit(" ", 1)[1])
        return deleted


def _identifier(name: str) -> str:
    """A table name from the catalog, checked before it is put into DDL."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a partition name: {name!r}")
    return name

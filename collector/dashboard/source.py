"""The dashboard's numbers from the collector's own store (``data.Source``), and the
monitor's event records when this collector keeps them (``data.RecordSource``)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from aiohttp import web

from collector.analysis.model import BucketCount
from collector.dashboard.records import Records
from collector.filters import Filters
from collector.state import CONFIG, PSEUDONYM_KEY, STORE

_PAGE = 500


class StoreSource:
    """The store's aggregation (what the analysis endpoints use), its coverage counts and,
    where the store has them and the monitor runs, its event records.

    It holds the app rather than the store: the pseudonym key exists once the app started.
    """

    def __init__(self, app: web.Application) -> None:
        self._app = app

    async def buckets(self, filters: Filters) -> list[BucketCount]:
        return await self._app[STORE].aggregate(filters, self._app[PSEUDONYM_KEY])

    async def coverage(self, since: float) -> dict[tuple[str, int], int]:
        return await Records(self._app[STORE]).coverage(since)

    def _keeps_records(self) -> bool:
        monitor = getattr(self._app[CONFIG], "monitor", None)
        return monitor is not None and monitor.enabled and hasattr(self._app[STORE], "list_events")

    async def records(self, since: float) -> dict[str, list[dict[str, Any]]] | None:
        if not self._keeps_records():
            return None
        from collector.store.records import EventQuery

        store: Any = self._app[STORE]
        out: dict[str, list[dict[str, Any]]] = defaultdict(list)
        before: int | None = None
        while True:
            page = await store.list_events(
                EventQuery(since=since, before_created_seq=before, limit=_PAGE)
            )
            for event in page:
                out[event.cc].append(event.body)
            if len(page) < _PAGE:
                return dict(out)
            before = page[-1].created_seq

    async def records_version(self) -> int | None:
        if not self._keeps_records():
            return None
        store: Any = self._app[STORE]
        return int(await store.last_seq())

    async def record(self, ident: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        if not self._keeps_records():
            return None
        store: Any = self._app[STORE]
        got = await store.get_event(ident)
        if got is None:
            return None
        event, revisions = got
        return event.body, [
            {
                "revision": r.revision,
                "type": r.type,
                "at": r.payload["event"].get("updated_at"),
                "status": r.payload["event"].get("status"),
                "end": r.payload["event"].get("end"),
                "domains": r.payload["event"].get("domains", []),
            }
            for r in revisions
        ]

"""The dashboard's numbers from the collector's own store (``data.Source``)."""

from __future__ import annotations

from aiohttp import web

from collector.dashboard.records import Records
from collector.state import PSEUDONYM_KEY, STORE
from collector.store.base import BucketCount
from shared.filters import Filters


class StoreSource:
    """The store's aggregation (what the analysis endpoints use) and its coverage counts.

    It holds the app rather than the store: the pseudonym key exists once the app started.
    """

    def __init__(self, app: web.Application) -> None:
        self._app = app

    async def buckets(self, filters: Filters) -> list[BucketCount]:
        return await self._app[STORE].aggregate(filters, self._app[PSEUDONYM_KEY])

    async def coverage(self, since: float) -> dict[tuple[str, int], int]:
        return await Records(self._app[STORE]).coverage(since)

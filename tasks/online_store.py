"""The online feature store: per-entity histories for the scorer's point-in-time aggregates, behind one interface.

`OnlineStore.record(events)` is the whole interface: given new events per entity, it atomically appends them and
returns each entity's history as it was BEFORE them, from which the scorer computes the aggregates of the new rows
(`tasks.entity_history`). Two implementations:
- `InProcessStore` (the embedded default): a dict in the scorer's process. Atomic because the scorer runs its
  handlers on one event loop and `record` never awaits. One process only: run one worker per replica with it.
- `RedisStore` (`SCOREGATE_ONLINE_STORE=redis://host:port/db`): one key per entity holding the history's binary form;
  a Lua script appends and trims it atomically inside Redis and returns the previous value, so several replicas can
  share the histories. It is one round trip per request (a pipeline when a request holds several entities).

Keys are namespaced by `history_namespace(spec)`, a hash of the definitions the history depends on (entity,
timestamp and amount columns, windows), so a model with other windows never reads a history trimmed for shorter ones.
Redis keeps histories without expiry: the running totals behind `amount_to_mean` cover a card's whole life.
"""

from __future__ import annotations

import abc
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import polars as pl

from tasks.config import FeatureSpec
from tasks.entity_history import AggregatePlan, EntityHistory

__all__ = [
    "STORE_ENV",
    "Event",
    "InProcessStore",
    "OnlineStore",
    "OnlineStoreError",
    "RedisStore",
    "backfill",
    "history_namespace",
    "open_online_store",
]

STORE_ENV = "SCOREGATE_ONLINE_STORE"
Event = tuple[int, float]  # (time in epoch milliseconds, amount)


class OnlineStoreError(RuntimeError):
    """The store could not be read or written (a Redis that is down, for example)."""


def history_namespace(spec: FeatureSpec) -> str:
    aggregates = spec.aggregates
    definition = {
        "entity": spec.entity_column,
        "timestamp": spec.timestamp.column if spec.timestamp is not None else None,
        "amount": aggregates.amount_column if aggregates is not None else None,
        "windows": sorted(aggregates.windows) if aggregates is not None else [],
    }
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:16]
    return f"scoregate:history:{digest}"


class OnlineStore(abc.ABC):
    """Per-entity histories; `record` appends events and returns the histories as they were before them."""

    kind: str

    def __init__(self, plan: AggregatePlan) -> None:
        self.plan = plan

    @abc.abstractmethod
    async def record(self, events: Mapping[str, Sequence[Event]]) -> dict[str, EntityHistory]:
        """Append each entity's events (in the given order) and return fresh copies of the histories before them."""

    @abc.abstractmethod
    async def ready(self) -> bool:
        """True when the store answers."""

    async def open(self) -> None:  # noqa: B027 - a hook: nothing to connect for most stores
        """Connect (called once, inside the server's event loop)."""

    async def close(self) -> None:  # noqa: B027 - a hook: nothing to release for most stores
        """Release connections."""


class InProcessStore(OnlineStore):
    kind = "in-process"

    def __init__(self, plan: AggregatePlan) -> None:
        super().__init__(plan)
        self._histories: dict[str, EntityHistory] = {}

    async def record(self, events: Mapping[str, Sequence[Event]]) -> dict[str, EntityHistory]:
        before: dict[str, EntityHistory] = {}
        retention = self.plan.retention_ms
        for entity, entity_events in events.items():
            history = self._histories.get(entity)
            if history is None:
                history = self._histories[entity] = EntityHistory()
            before[entity] = history.copy()
            for time_ms, amount in entity_events:
                history.append(time_ms, amount)
            history.trim(retention)
        return before

    async def ready(self) -> bool:
        return True

    def __len__(self) -> int:
        return len(self._histories)


# Appends packed (time, amount) float64 pairs to the key's history, updates the totals in the same order as
# EntityHistory.append (IEEE double addition, as in Python), trims like EntityHistory.trim, and returns the old value.
# Redis' Lua has the `struct` library, so doubles round-trip exactly in binary (tostring would round them).
_RECORD_SCRIPT = """
local old = redis.call('GET', KEYS[1])
local retention = tonumber(ARGV[1])
local new = ARGV[2]
local count, total = 0, 0.0
local times, amounts = {}, {}
if old then
  local pos
  count, total, pos = struct.unpack('<dd', old)
  while pos <= #old do
    local t, a
    t, a, pos = struct.unpack('<dd', old, pos)
    times[#times + 1] = t
    amounts[#amounts + 1] = a
  end
end
local pos = 1
while pos <= #new do
  local t, a
  t, a, pos = struct.unpack('<dd', new, pos)
  count = count + 1
  total = total + a
  local i = #times
  while i >= 1 and times[i] > t do i = i - 1 end
  table.insert(times, i + 1, t)
  table.insert(amounts, i + 1, a)
end
local n = #times
local cutoff = times[n] - retention
local first = 1
while first <= n and times[first] < cutoff do first = first + 1 end
local parts = {struct.pack('<dd', count, total)}
for i = math.max(first - 1, 1), n do
  parts[#parts + 1] = struct.pack('<dd', times[i], amounts[i])
end
redis.call('SET', KEYS[1], table.concat(parts))
return old
"""


def _without_password(url: str) -> str:
    """The URL as it may be logged: a password in it (redis://user:secret@host) is replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _pack(events: Sequence[Event]) -> bytes:
    history = EntityHistory()
    for time_ms, amount in events:
        history.times.append(time_ms)
        history.amounts.append(amount)
    # to_bytes writes the (count, total) header first; the script wants the pairs only.
    return history.to_bytes()[16:]


class RedisStore(OnlineStore):
    kind = "redis"

    def __init__(self, plan: AggregatePlan, url: str, namespace: str, *, timeout_s: float = 2.0) -> None:
        super().__init__(plan)
        self.url = url
        self.namespace = namespace
        self._timeout_s = timeout_s
        self._client: Any = None
        self._script: Any = None

    async def open(self) -> None:
        import redis.asyncio as aioredis

        self._client = aioredis.Redis.from_url(
            self.url, socket_timeout=self._timeout_s, socket_connect_timeout=self._timeout_s
        )
        self._script = self._client.register_script(_RECORD_SCRIPT)

    def _key(self, entity: str) -> str:
        return f"{self.namespace}:{entity}"

    async def record(self, events: Mapping[str, Sequence[Event]]) -> dict[str, EntityHistory]:
        from redis.exceptions import RedisError

        if self._client is None:
            await self.open()
        entities = list(events)
        retention = str(self.plan.retention_ms)
        try:
            if len(entities) == 1:
                entity = entities[0]
                old = [await self._script(keys=[self._key(entity)], args=[retention, _pack(events[entity])])]
            else:
                async with self._client.pipeline(transaction=False) as pipe:
                    for entity in entities:
                        await self._script(
                            keys=[self._key(entity)], args=[retention, _pack(events[entity])], client=pipe
                        )
                    old = await pipe.execute()
        except RedisError as error:
            raise OnlineStoreError(f"online store {_without_password(self.url)}: {error}") from error
        return {entity: EntityHistory.from_bytes(value) for entity, value in zip(entities, old, strict=True)}

    async def ready(self) -> bool:
        from redis.exceptions import RedisError

        try:
            if self._client is None:
                await self.open()
            return bool(await self._client.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def history(self, entity: str) -> EntityHistory:
        """The stored history of one entity (for inspection and tests)."""
        if self._client is None:
            await self.open()
        return EntityHistory.from_bytes(await self._client.get(self._key(entity)))


def open_online_store(spec: FeatureSpec, url: str | None) -> OnlineStore | None:
    """The store for `spec`'s aggregates: in-process when `url` is empty or 'memory', Redis for redis:// URLs."""
    if spec.aggregates is None:
        return None
    plan = AggregatePlan.from_spec(spec.aggregates)
    if url is None or url in ("", "memory", "in-process"):
        return InProcessStore(plan)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(plan, url, history_namespace(spec))
    raise ValueError(f"{STORE_ENV}: expected 'memory' or a redis:// URL, got {_without_password(url)!r}")


async def backfill(store: OnlineStore, frame: pl.DataFrame, spec: FeatureSpec, *, chunk_rows: int = 50_000) -> int:
    """Load past transactions (raw rows, typed like the batch job's) into the store in time order; returns rows."""
    if spec.aggregates is None:
        return 0
    assert spec.entity_column is not None and spec.timestamp is not None  # FeatureSpec validation
    ordered = frame.select(
        pl.col(spec.entity_column).cast(pl.String).fill_null("").alias("entity"),
        pl.col(spec.timestamp.column).dt.epoch("ms").alias("time_ms"),
        pl.col(spec.aggregates.amount_column).cast(pl.Float64).alias("amount"),
    ).with_row_index("_order")
    ordered = ordered.sort(["time_ms", "_order"])
    for start in range(0, ordered.height, chunk_rows):
        chunk = ordered.slice(start, chunk_rows)
        events: dict[str, list[Event]] = {}
        for entity, time_ms, amount in zip(chunk["entity"], chunk["time_ms"], chunk["amount"], strict=True):
            events.setdefault(entity, []).append((int(time_ms), float(amount)))
        await store.record(events)
    return ordered.height

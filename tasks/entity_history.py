"""One entity's (card's) transaction history as the online store keeps it, and the aggregates computed from it.

The batch job (`tasks.features.add_aggregates`) sees a card's whole history; a server cannot keep that. What the
aggregates need is smaller:
- `amount_to_mean` needs the count and the sum of ALL earlier amounts: kept as running totals (`count`, `total`),
  accumulated in arrival order, which for rows arriving in time order is the batch job's cumulative-sum order, so the
  mean is the same to the last bit;
- the windows need the events of the last `retention` (the longest window) before the newest event, plus one
  older event (the anchor) so that the time since the previous transaction is known even after a quiet week.

Definitions are the batch job's: a row at time t sees the entity's events with time strictly before t (an event at
the same millisecond is not earlier), window w covers [t - w, t), `hours_since_previous` is the gap to the latest
earlier event (or `no_history_hours`), `amount_to_mean` is amount / mean of earlier amounts (1.0 without history or
with a non-positive mean). Exact (to rounding) for a row no older than the newest event minus the retention; a row
that arrives later than that is still scored, against the events the store kept. `tests/bentos` replays the test
split through the running service and requires the batch job's numbers within 1e-9.
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

from tasks.config import AggregateSpec, parse_duration_ms

__all__ = ["AggregatePlan", "EntityHistory"]

_MS_PER_HOUR = 3_600_000.0
_HEADER = 2  # count, total


@dataclass(frozen=True, slots=True)
class AggregatePlan:
    """The window definitions of an AggregateSpec, in milliseconds, with the output names in batch order."""

    names: tuple[str, ...]
    windows_ms: tuple[int, ...]
    time_since_previous: bool
    amount_to_mean: bool
    no_history_hours: float
    retention_ms: int

    @classmethod
    def from_spec(cls, spec: AggregateSpec) -> AggregatePlan:
        windows = tuple(parse_duration_ms(w) for w in spec.windows)
        return cls(
            names=tuple(spec.output_names()),
            windows_ms=windows,
            time_since_previous=spec.time_since_previous,
            amount_to_mean=spec.amount_to_mean,
            no_history_hours=spec.no_history_hours,
            retention_ms=max(windows),
        )


class EntityHistory:
    """Running totals plus the recent events (times in epoch ms, sorted; ties in arrival order)."""

    __slots__ = ("amounts", "count", "times", "total")

    def __init__(
        self, count: int = 0, total: float = 0.0, times: list[int] | None = None, amounts: list[float] | None = None
    ) -> None:
        self.count = count
        self.total = total
        self.times: list[int] = times if times is not None else []
        self.amounts: list[float] = amounts if amounts is not None else []

    def copy(self) -> EntityHistory:
        return EntityHistory(self.count, self.total, list(self.times), list(self.amounts))

    def append(self, time_ms: int, amount: float) -> None:
        self.count += 1
        self.total += amount
        # After every event at the same or an earlier time: arrival order among ties, like the batch stable sort.
        position = bisect_right(self.times, time_ms)
        if position == len(self.times):
            self.times.append(time_ms)
            self.amounts.append(amount)
        else:
            self.times.insert(position, time_ms)
            self.amounts.insert(position, amount)

    def trim(self, retention_ms: int) -> None:
        """Forget events older than the newest minus `retention_ms`, but keep the latest of those as the anchor."""
        if not self.times:
            return
        first_kept = bisect_left(self.times, self.times[-1] - retention_ms)
        drop = max(first_kept - 1, 0)
        if drop:
            del self.times[:drop]
            del self.amounts[:drop]

    def aggregates(self, time_ms: int, amount: float, plan: AggregatePlan) -> list[float]:
        """The batch job's aggregates for a row at `time_ms`, in `plan.names` order."""
        times, amounts = self.times, self.amounts
        earlier = bisect_left(times, time_ms)
        count, total = self.count, self.total
        if earlier < len(times):
            # Events at or after this row's time are in the totals but are not its history.
            count -= len(times) - earlier
            total -= sum(amounts[earlier:])
        values: list[float] = []
        for window_ms in plan.windows_ms:
            start = bisect_left(times, time_ms - window_ms, 0, earlier)
            inside = earlier - start
            values.append(float(inside))
            values.append(sum(amounts[start:earlier]) if inside else 0.0)
        if plan.time_since_previous:
            if count > 0 and earlier > 0:
                values.append(float(time_ms - times[earlier - 1]) / _MS_PER_HOUR)
            else:
                values.append(plan.no_history_hours)
        if plan.amount_to_mean:
            mean = total / float(count) if count > 0 else 0.0
            values.append(amount / mean if mean > 0.0 else 1.0)
        return values

    # -- a compact binary form for shared stores: float64 count, total, then (time, amount) pairs, little-endian.

    def to_bytes(self) -> bytes:
        values = array("d", [float(self.count), self.total])
        for time_ms, amount in zip(self.times, self.amounts, strict=True):
            values.append(float(time_ms))
            values.append(amount)
        if sys.byteorder != "little":
            values.byteswap()
        return values.tobytes()

    @classmethod
    def from_bytes(cls, payload: bytes | None) -> EntityHistory:
        if not payload:
            return cls()
        values = array("d")
        values.frombytes(payload)
        if sys.byteorder != "little":
            values.byteswap()
        # Times are whole milliseconds, exact in a float64 for the next 285,000 years.
        return cls(
            int(values[0]),
            values[1],
            [int(t) for t in values[_HEADER::2]],
            values[_HEADER + 1 :: 2].tolist(),
        )

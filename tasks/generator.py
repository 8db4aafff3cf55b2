"""Seeded synthetic card-transaction generator: the pipeline's built-in raw data source.

`generate_transactions` draws a frame of card transactions whose fraud label comes from a documented mechanism, so a
model trained on it has a known ground truth to recover:

1. A logistic model on row features (`FRAUD_COEFFICIENTS`): amount, cross-border, night, online, unknown device,
   risky merchant category, and an extra term for large cross-border charges at night.
2. Card-testing bursts: a few cards get 3-8 small online charges within minutes of each other, all fraud. They are
   what the per-card velocity features (counts in the last 1h/24h/7d, time since the previous transaction) exist for.

Everything is vectorised numpy driven by one `numpy.random.default_rng(seed)`, so the same arguments always give an
identical frame, and ten million rows take a few seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt
import polars as pl

__all__ = [
    "CARD_COUNTRIES",
    "CHANNELS",
    "FRAUD_COEFFICIENTS",
    "LARGE_AMOUNT",
    "MERCHANT_CATEGORIES",
    "NIGHT_HOURS",
    "RAW_COLUMNS",
    "RISKY_CATEGORIES",
    "generate_transactions",
]

RAW_COLUMNS: Final[tuple[str, ...]] = (
    "transaction_id",
    "card_id",
    "timestamp",
    "amount",
    "merchant_category",
    "merchant_country",
    "card_country",
    "channel",
    "device_seen_before",
    "is_fraud",
)

MERCHANT_CATEGORIES: Final[tuple[str, ...]] = (
    "grocery",
    "fuel",
    "restaurants",
    "travel",
    "electronics",
    "online_retail",
    "gaming",
    "jewelry",
    "pharmacy",
    "utilities",
    "entertainment",
    "cash",
)
RISKY_CATEGORIES: Final[frozenset[str]] = frozenset({"electronics", "jewelry", "gaming", "travel"})
CHANNELS: Final[tuple[str, ...]] = ("online", "pos", "atm")
# Cards are issued in these countries only; the rest of `_COUNTRIES` appear only as foreign merchant countries.
CARD_COUNTRIES: Final[tuple[str, ...]] = (
    "US",
    "GB",
    "DE",
    "FR",
    "NL",
    "ES",
    "CA",
    "IT",
)
_COUNTRIES: Final[tuple[str, ...]] = (
    *CARD_COUNTRIES,
    "MX",
    "BR",
    "TR",
    "TH",
    "NG",
    "AE",
    "CN",
    "RU",
)
_CARD_COUNTRY_WEIGHTS: Final = np.array([40, 16, 12, 10, 6, 6, 6, 4], dtype=np.float64)

# Clock hours of `timestamp` that count as night, for the `night` fraud term.
NIGHT_HOURS: Final[range] = range(6)
# Amount from which a cross-border night charge also gets the `large_foreign_night` term.
LARGE_AMOUNT: Final[float] = 500.0

FRAUD_COEFFICIENTS: Final[Mapping[str, float]] = MappingProxyType(
    {
        # The log-odds of fraud for a row outside a card-testing burst are
        #     intercept + log_amount * ln(amount) + sum(coefficient * indicator)
        # over these 0/1 indicators:
        #     cross_border         merchant_country != card_country
        #     night                timestamp.hour in NIGHT_HOURS
        #     online               channel == "online"
        #     new_device           not device_seen_before
        #     risky_category       merchant_category in RISKY_CATEGORIES
        #     large_foreign_night  cross_border and night and amount >= LARGE_AMOUNT
        # Burst rows are fraud whatever these give. Together they make about 1.5-2% of rows fraud.
        "intercept": -7.6,
        "log_amount": 0.35,
        "cross_border": 2.4,
        "night": 1.7,
        "online": 1.0,
        "new_device": 1.9,
        "risky_category": 1.1,
        "large_foreign_night": 1.5,
    }
)

_US_PER_SECOND: Final[int] = 1_000_000
_US_PER_HOUR: Final[int] = 3600 * _US_PER_SECOND
_US_PER_DAY: Final[int] = 24 * _US_PER_HOUR
_EPOCH: Final[datetime] = datetime(1970, 1, 1)

# Relative volume per clock hour: a trough before dawn, a plateau through the day, an evening peak.
# fmt: off
_HOUR_WEIGHTS: Final = np.array(
    [12, 8, 6, 5, 6, 12, 25, 40, 50, 55, 58, 60, 62, 60, 58, 56, 56, 58, 62, 64, 60, 50, 35, 22],
    dtype=np.float64,
)
# fmt: on

# Per merchant category, in MERCHANT_CATEGORIES order: share of transactions, median amount, and the share that is
# online (cash is always an ATM withdrawal).
_CATEGORY_WEIGHTS: Final = np.array([22, 10, 16, 3, 4, 15, 3, 1, 6, 6, 8, 6], dtype=np.float64)
_CATEGORY_MEDIAN_AMOUNT: Final = np.array([35, 45, 28, 320, 180, 45, 20, 350, 22, 85, 30, 80], dtype=np.float64)
_CATEGORY_ONLINE_SHARE: Final = np.array([0.05, 0.0, 0.1, 0.6, 0.45, 1.0, 0.9, 0.2, 0.1, 0.7, 0.5, 0.0])
_CASH_CATEGORY: Final[int] = MERCHANT_CATEGORIES.index("cash")
_RISKY_BY_CATEGORY: Final = np.array([name in RISKY_CATEGORIES for name in MERCHANT_CATEGORIES])
_AMOUNT_LOG_SIGMA: Final[float] = 0.8
# Caps the log-normal tail so no single charge is absurd; far below the 1e6 the raw-data contract allows.
_MAX_AMOUNT: Final[float] = 25_000.0
_ATM_NOTE: Final[float] = 20.0

_ONLINE: Final[int] = CHANNELS.index("online")
_POS: Final[int] = CHANNELS.index("pos")
_ATM: Final[int] = CHANNELS.index("atm")
# Share of transactions from a device the issuer has seen before, per channel in CHANNELS order.
_DEVICE_SEEN_SHARE: Final = np.array([0.75, 0.9, 0.95])
_FOREIGN_SHARE: Final[float] = 0.08

_ROWS_PER_CARD: Final[int] = 40
_MIN_CARDS: Final[int] = 10
# Card activity is log-normal across cards, so a minority of cards carries much of the volume. Each card gets a whole
# number of slots in a lookup table (about this many on average), which makes drawing the card of 10M rows one gather.
_CARD_ACTIVITY_SIGMA: Final[float] = 1.2
_MEAN_CARD_SLOTS: Final[int] = 16

# About this share of all rows belongs to card-testing bursts (on top of the logistic fraud). Frames too small for a
# whole burst at this share get none.
_BURST_ROW_SHARE: Final[float] = 0.004
_BURST_MIN_LEN: Final[int] = 3
_BURST_MAX_LEN: Final[int] = 8
# Seconds between consecutive charges of a burst; 7 gaps of under a minute keep a whole burst inside seven minutes.
_BURST_GAP_SECONDS: Final[tuple[int, int]] = (5, 60)
_BURST_CATEGORIES: Final = np.array(
    [MERCHANT_CATEGORIES.index(name) for name in ("online_retail", "gaming", "electronics", "entertainment")],
    dtype=np.uint8,
)
_BURST_AMOUNT: Final[tuple[float, float]] = (1.0, 10.0)

_CHOICE_TABLE_SIZE: Final[int] = 2**16

_I64 = npt.NDArray[np.int64]
_I32 = npt.NDArray[np.int32]
_U8 = npt.NDArray[np.uint8]
_F64 = npt.NDArray[np.float64]
_Bool = npt.NDArray[np.bool_]


class _Rows(NamedTuple):
    """Row features as index arrays; strings are only materialised once, in `_to_frame`."""

    timestamp: _I64  # microseconds since the epoch, naive
    card: _I32
    amount: _F64
    category: _U8  # index into MERCHANT_CATEGORIES
    merchant_country: _U8  # index into _COUNTRIES
    channel: _U8  # index into CHANNELS
    device_seen: _Bool
    burst: _Bool


def generate_transactions(
    rows: int, *, seed: int = 7, days: int = 90, start: datetime = datetime(2026, 1, 1)
) -> pl.DataFrame:
    """Draw `rows` synthetic card transactions spread over `days` days from `start`, sorted by timestamp.

    Columns are `RAW_COLUMNS`. `transaction_id` increases with `timestamp`, so it also orders timestamp ties.
    The same arguments always return an identical frame.
    """
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    if start.tzinfo is not None:
        raise ValueError(f"start must be a naive datetime, like the timestamps it produces; got {start!r}")

    rng = np.random.default_rng(seed)
    start_us = (start - _EPOCH) // timedelta(microseconds=1)
    span_us = days * _US_PER_DAY

    n_cards = max(_MIN_CARDS, rows // _ROWS_PER_CARD)
    card_country = _weighted_choice(rng, _CARD_COUNTRY_WEIGHTS, n_cards)

    n_bursts = int(rows * _BURST_ROW_SHARE / ((_BURST_MIN_LEN + _BURST_MAX_LEN) / 2))
    burst_len = rng.integers(_BURST_MIN_LEN, _BURST_MAX_LEN + 1, size=n_bursts)

    normal = _normal_rows(rng, rows - int(burst_len.sum()), card_country, start_us, span_us)
    bursts = _burst_rows(rng, burst_len, card_country, start_us, span_us)
    # Both parts come out time-sorted, so inserting one into the other keeps the frame sorted without a full sort.
    at = np.searchsorted(normal.timestamp, bursts.timestamp, side="right")
    merged = _Rows._make(np.insert(getattr(normal, name), at, getattr(bursts, name)) for name in _Rows._fields)
    del normal, bursts
    # Rounded to cents before labelling, so that the mechanism is exactly a function of the published amount.
    np.round(merged.amount, 2, out=merged.amount)
    np.maximum(merged.amount, 0.01, out=merged.amount)

    is_fraud = _label(rng, merged, card_country)
    return _to_frame(merged, card_country, is_fraud)


def _normal_rows(rng: np.random.Generator, n: int, card_country: _U8, start_us: int, span_us: int) -> _Rows:
    # Rows are independent of each other, so drawing the timestamps already sorted and everything else in draw order
    # gives the same distribution as sorting afterwards.
    timestamp = _daily_cycle_timestamps(rng, n, start_us, span_us)

    activity = rng.lognormal(0.0, _CARD_ACTIVITY_SIGMA, size=card_country.size)
    slots = 1 + (activity * (_MEAN_CARD_SLOTS / activity.mean())).astype(np.int64)
    card_table = np.repeat(np.arange(card_country.size, dtype=np.int32), slots)
    card = card_table[rng.integers(0, card_table.size, size=n)]

    category = _weighted_choice(rng, _CATEGORY_WEIGHTS, n)
    channel = np.where(
        rng.random(n) < _CATEGORY_ONLINE_SHARE[category],
        np.uint8(_ONLINE),
        np.uint8(_POS),
    )
    cash = category == _CASH_CATEGORY
    channel[cash] = _ATM

    amount = rng.normal(0.0, _AMOUNT_LOG_SIGMA, size=n)
    amount += np.log(_CATEGORY_MEDIAN_AMOUNT)[category]
    np.exp(amount, out=amount)
    np.minimum(amount, _MAX_AMOUNT, out=amount)
    # ATMs dispense notes.
    amount[cash] = np.maximum(np.round(amount[cash] / _ATM_NOTE), 1.0) * _ATM_NOTE

    return _Rows(
        timestamp=timestamp,
        card=card,
        amount=amount,
        category=category,
        merchant_country=_merchant_country(rng, card_country[card]),
        channel=channel,
        device_seen=rng.random(n) < _DEVICE_SEEN_SHARE[channel],
        burst=np.zeros(n, dtype=np.bool_),
    )


def _burst_rows(
    rng: np.random.Generator,
    burst_len: _I64,
    card_country: _U8,
    start_us: int,
    span_us: int,
) -> _Rows:
    n_bursts = burst_len.size
    n = int(burst_len.sum())
    burst_of_row = np.repeat(np.arange(n_bursts), burst_len)
    first_row = np.cumsum(burst_len) - burst_len

    card = rng.choice(card_country.size, size=n_bursts, replace=n_bursts > card_country.size).astype(np.int32)
    min_gap_us, max_gap_us = (seconds * _US_PER_SECOND for seconds in _BURST_GAP_SECONDS)
    latest_start = span_us - _BURST_MAX_LEN * max_gap_us
    burst_start = start_us + rng.integers(0, latest_start, size=n_bursts)
    gap = rng.integers(min_gap_us, max_gap_us, size=n)
    gap[first_row] = 0
    elapsed = np.cumsum(gap)
    elapsed -= elapsed[first_row][burst_of_row]

    # Testers hammer one merchant per burst, online, with charges small enough to go unnoticed.
    category = _BURST_CATEGORIES[rng.integers(0, _BURST_CATEGORIES.size, size=n_bursts)]
    rows = _Rows(
        timestamp=burst_start[burst_of_row] + elapsed,
        card=card[burst_of_row],
        amount=rng.uniform(*_BURST_AMOUNT, size=n),
        category=category[burst_of_row],
        merchant_country=_merchant_country(rng, card_country[card])[burst_of_row],
        channel=np.full(n, _ONLINE, dtype=np.uint8),
        device_seen=np.zeros(n, dtype=np.bool_),
        burst=np.ones(n, dtype=np.bool_),
    )
    order = np.argsort(rows.timestamp, kind="stable")
    return _Rows._make(column[order] for column in rows)


def _daily_cycle_timestamps(rng: np.random.Generator, n: int, start_us: int, span_us: int) -> _I64:
    """Sorted timestamps in [start, start + span) with a density that follows the clock hour (`_HOUR_WEIGHTS`)."""
    end_us = start_us + span_us
    # Cut the span at every clock-hour boundary, so that each segment lies within one clock hour.
    first_boundary = start_us - start_us % _US_PER_HOUR + _US_PER_HOUR
    edges = np.concatenate(([start_us], np.arange(first_boundary, end_us, _US_PER_HOUR), [end_us]))
    seg_start, seg_len = edges[:-1], np.diff(edges)
    seg_weight = _HOUR_WEIGHTS[(seg_start // _US_PER_HOUR) % 24] * seg_len
    per_seg = rng.multinomial(n, seg_weight / seg_weight.sum())

    # Sorted uniforms without sorting: the normalised partial sums of k + 1 i.i.d. exponential spacings are
    # distributed as the order statistics of k uniforms. At 10M rows this is several times faster than a sort.
    partial_sums = np.concatenate(([0.0], np.cumsum(rng.standard_exponential(n + per_seg.size))))
    first_sum = np.cumsum(per_seg + 1) - (per_seg + 1)
    base = partial_sums[first_sum]
    total = partial_sums[first_sum + per_seg + 1] - base
    seg_of_row = np.repeat(np.arange(per_seg.size), per_seg)
    fraction = partial_sums[np.arange(1, n + 1) + seg_of_row]
    del partial_sums
    fraction -= base[seg_of_row]
    fraction /= total[seg_of_row]
    row_len = seg_len[seg_of_row]
    # Rounding can push the last point of a segment onto its end; keep it inside.
    offset: _I64 = np.minimum((fraction * row_len).astype(np.int64), row_len - 1)
    offset += seg_start[seg_of_row]
    return offset


def _weighted_choice(rng: np.random.Generator, weights: _F64, n: int) -> _U8:
    # Inverse-CDF lookup through a 2**16-entry table: probabilities exact to 1/65536, and several times faster than
    # `rng.choice(p=...)`, which binary-searches the CDF for every row.
    cdf = np.cumsum(weights / weights.sum())
    quantiles = (np.arange(_CHOICE_TABLE_SIZE) + 0.5) / _CHOICE_TABLE_SIZE
    table = np.minimum(np.searchsorted(cdf, quantiles, side="right"), weights.size - 1).astype(np.uint8)
    return table[rng.integers(0, _CHOICE_TABLE_SIZE, size=n, dtype=np.uint16)]


def _merchant_country(rng: np.random.Generator, card_country: _U8) -> _U8:
    n = card_country.size
    foreign = rng.random(n) < _FOREIGN_SHARE
    # Uniform over the other countries: draw from one fewer and step over the card's own index.
    other = rng.integers(0, len(_COUNTRIES) - 1, size=n, dtype=np.uint8)
    other += other >= card_country
    return np.where(foreign, other, card_country)


def _label(rng: np.random.Generator, rows: _Rows, card_country: _U8) -> npt.NDArray[np.int8]:
    c = FRAUD_COEFFICIENTS
    cross_border = rows.merchant_country != card_country[rows.card]
    hour = (rows.timestamp // _US_PER_HOUR) % 24
    night = (hour >= NIGHT_HOURS.start) & (hour < NIGHT_HOURS.stop)
    logit = np.log(rows.amount)
    logit *= c["log_amount"]
    logit += c["intercept"]
    logit += c["cross_border"] * cross_border
    logit += c["night"] * night
    logit += c["online"] * (rows.channel == _ONLINE)
    logit += c["new_device"] * ~rows.device_seen
    logit += c["risky_category"] * _RISKY_BY_CATEGORY[rows.category]
    logit += c["large_foreign_night"] * (cross_border & night & (rows.amount >= LARGE_AMOUNT))
    fraud = rng.random(logit.size) < 1.0 / (1.0 + np.exp(-logit))
    return (fraud | rows.burst).view(np.int8)


def _to_frame(rows: _Rows, card_country: _U8, is_fraud: npt.NDArray[np.int8]) -> pl.DataFrame:
    n = rows.timestamp.size
    # Fixed width keeps string order equal to time order; "tx" plus up to 10 digits fits the 12 bytes polars stores
    # inline.
    id_width = max(8, len(str(n - 1)))
    card_width = max(6, len(str(card_country.size - 1)))
    card_ids = pl.select(
        pl.format(
            "card{}",
            pl.int_range(card_country.size).cast(pl.String).str.zfill(card_width),
        )
    ).to_series()
    countries = pl.Series(_COUNTRIES)
    indices = pl.DataFrame(
        [
            pl.Series("timestamp", rows.timestamp).cast(pl.Datetime("us")),
            pl.Series("card", rows.card),
            pl.Series("amount", rows.amount),
            pl.Series("category", rows.category),
            pl.Series("merchant_country", rows.merchant_country),
            pl.Series("card_country", card_country[rows.card]),
            pl.Series("channel", rows.channel),
            pl.Series("device_seen_before", rows.device_seen),
            pl.Series("is_fraud", is_fraud),
        ]
    )
    return indices.select(
        # `10**width + i` starts with its only guaranteed "1"; replacing that with "tx" pads and prefixes in one
        # string pass, about twice as fast as `zfill` plus a concatenation.
        (pl.int_range(pl.len(), dtype=pl.Int64) + 10**id_width)
        .cast(pl.String)
        .str.replace("1", "tx", literal=True)
        .alias("transaction_id"),
        pl.lit(card_ids).gather(pl.col("card")).alias("card_id"),
        pl.col("timestamp"),
        pl.col("amount"),
        pl.lit(pl.Series(MERCHANT_CATEGORIES)).gather(pl.col("category")).alias("merchant_category"),
        pl.lit(countries).gather(pl.col("merchant_country")).alias("merchant_country"),
        pl.lit(countries).gather(pl.col("card_country")).alias("card_country"),
        pl.lit(pl.Series(CHANNELS)).gather(pl.col("channel")).alias("channel"),
        pl.col("device_seen_before"),
        pl.col("is_fraud"),
    )

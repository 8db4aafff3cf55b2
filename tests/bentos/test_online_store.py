"""The Redis store keeps the same histories as the in-process store, atomically, and fails clearly when down."""

from __future__ import annotations

import asyncio

import pytest

from tasks.online_store import InProcessStore, OnlineStoreError, RedisStore, backfill, open_online_store
from tasks.sample_bento import SampleModel
from tests.servers import free_port


def test_redis_and_in_process_stores_keep_identical_histories(sample: SampleModel, redis_url: str) -> None:
    async def scenario() -> tuple[int, int]:
        # given both stores, fed the same transactions in chunks (as the service does)
        memory = open_online_store(sample.config.spec, None)
        shared = open_online_store(sample.config.spec, redis_url.rsplit("/", 1)[0] + "/1")
        assert isinstance(memory, InProcessStore) and isinstance(shared, RedisStore)
        await shared.open()
        await backfill(memory, sample.frame, sample.config.spec, chunk_rows=997)
        await backfill(shared, sample.frame, sample.config.spec, chunk_rows=997)
        # then every card's history is the same to the byte (totals, kept events, order)
        differing = 0
        for card in sample.frame["card_id"].unique().to_list():
            mine = (await memory.record({card: []}))[card]
            theirs = await shared.history(card)
            differing += mine.to_bytes() != theirs.to_bytes()
        await shared.close()
        return len(memory), differing

    cards, differing = asyncio.run(scenario())
    assert cards == sample.frame["card_id"].n_unique()
    assert differing == 0


def test_concurrent_appends_to_one_card_are_all_counted(sample: SampleModel, redis_url: str) -> None:
    async def scenario() -> tuple[int, list[int]]:
        # given two connections to one Redis store
        first = open_online_store(sample.config.spec, redis_url.rsplit("/", 1)[0] + "/2")
        second = open_online_store(sample.config.spec, redis_url.rsplit("/", 1)[0] + "/2")
        assert isinstance(first, RedisStore) and isinstance(second, RedisStore)
        await first.open()
        await second.open()
        # when both append to the same card at once, 50 times each
        calls = [store.record({"card-race": [(1_000 * i, 1.0)]}) for i in range(50) for store in (first, second)]
        before = await asyncio.gather(*calls)
        final = await first.history("card-race")
        await first.close()
        await second.close()
        return final.count, sorted(b["card-race"].count for b in before)

    count, seen_before = asyncio.run(scenario())
    # then no append is lost and each saw a distinct prior state (the script runs atomically)
    assert count == 100
    assert seen_before == list(range(100))


def test_a_store_that_is_down_is_not_ready_and_fails_clearly(sample: SampleModel) -> None:
    # given a Redis URL with a password, where nothing listens
    port = free_port()

    async def scenario() -> tuple[bool, str]:
        store = open_online_store(sample.config.spec, f"redis://scorer:s3cret-pw@127.0.0.1:{port}/0")
        assert store is not None
        ready = await store.ready()
        with pytest.raises(OnlineStoreError, match="online store") as failure:
            await store.record({"card": [(0, 1.0)]})
        await store.close()
        return ready, str(failure.value)

    # when it is asked whether it is ready and then used
    ready, message = asyncio.run(scenario())
    # then it is not ready, and the error names the store without its password
    assert ready is False
    assert f"redis://scorer:***@127.0.0.1:{port}/0" in message
    assert "s3cret-pw" not in message


def test_an_unknown_store_url_is_refused(sample: SampleModel) -> None:
    with pytest.raises(ValueError, match="SCOREGATE_ONLINE_STORE") as refused:
        open_online_store(sample.config.spec, "postgres://app:hunter2@db:5432/x")
    assert "postgres://app:***@db:5432/x" in str(refused.value) and "hunter2" not in str(refused.value)

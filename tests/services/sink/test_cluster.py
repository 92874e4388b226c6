"""The sink on a real Redis Cluster (three primaries started here, on 127.0.0.1): a sink worker
process over the shared Kafka, the dashboard's reader and erasure give exactly the figures of
one Redis node."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from facestream.admin.erasure import erase
from facestream.devstack.config import StackError
from facestream.devstack.redis_cluster import LocalRedis, local_redis
from facestream.runtime.settings import PipelineSettings
from facestream.services.sink.reader import StoreReader
from facestream.services.sink.stats import store_stats
from facestream.services.sink.store import Applier, StoreKeys, plan, purge, redis_client
from tests.services.sink.test_sink import SINK, T0, finish, produce, start_sink, traffic


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedis]:
    """A Redis Cluster of three primaries, no replicas; stopped after the module."""
    try:
        with local_redis(tmp_path_factory.mktemp("redis-cluster"), nodes=3) as servers:
            yield servers
    except StackError as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def keys_by_node(cluster: LocalRedis, prefix: str) -> dict[int, int]:
    return {
        port: sum(1 for _ in cluster.node(port).scan_iter(match=f"{prefix}:*", count=1000))
        for port in cluster.ports
    }


def test_sink_process_on_a_cluster_counts_as_one_node_does(
    pipeline: PipelineSettings, cluster: LocalRedis, tmp_path: Path
) -> None:
    on_cluster = pipeline.model_copy(update={"redis_url": cluster.url, "redis_cluster": True})
    events = traffic(300, seed=13)
    produce(pipeline, [(e.store_id, e.to_bytes()) for e in events])
    rc = redis_client(on_cluster)
    one = redis.Redis.from_url(pipeline.redis_url, decode_responses=True)
    log = tmp_path / "sink.log"
    try:
        sink = start_sink(on_cluster, log)
        # Killed once its first batch is in: the restart redelivers, on the cluster too.
        registry = f"{pipeline.redis_prefix}:stores"
        deadline = time.monotonic() + 30
        while not rc.exists(registry) and time.monotonic() < deadline and sink.poll() is None:
            time.sleep(0.01)
        os.kill(sink.pid, signal.SIGKILL)
        sink.wait(timeout=10)
        finish(start_sink(on_cluster, log), rc, on_cluster, events, log, within=45)

        # The same events on the single node, in process: the reference.
        Applier(one, pipeline.redis_prefix).apply(
            [plan(e, SINK, pipeline.redis_prefix) for e in events]
        )
        spread = keys_by_node(cluster, pipeline.redis_prefix)
        assert sum(1 for n in spread.values() if n) >= 2, spread  # stores on several nodes
        days = {
            (e.store_id, e.captured_at.astimezone(SINK.zone_for(e.store_id)).date()) for e in events
        }
        readers = [StoreReader(s, SINK, client=c) for s, c in ((on_cluster, rc), (pipeline, one))]
        assert readers[0].stores() == readers[1].stores()
        for store, day in sorted(days):
            got, want = (r.day(store, day).as_dict() for r in readers)
            assert got == want
            assert got["pv"] > 0 and got["dwell_visits"] >= 0
            arrivals = [
                [(a.member_id, a.at_ms) for a in r.arrivals(store, None, 100)] for r in readers
            ]
            assert arrivals[0] == arrivals[1]

        # Erasure: the admin command on the cluster, the sink's purge on the node.
        member = sorted(e.member_id for e in events if e.member_id)[0]
        result = erase(member, on_cluster, timeout=5)
        assert result.visits_purged and result.confirmed  # no live matcher to wait for
        purge(member, pipeline, client=one)
        for store, day in sorted(days):
            after = [
                store_stats(store, day, s, client=c) for s, c in ((on_cluster, rc), (pipeline, one))
            ]
            assert after[0] == after[1] and member not in after[0].members
        named = [k for k in rc.scan_iter(match=f"{pipeline.redis_prefix}:*m:{member}*")]
        assert {k.split(":")[-3] for k in named} == {"erased"}, named
        assert not rc.exists(StoreKeys(pipeline.redis_prefix, "s1").visits(f"m:{member}"))
    finally:
        doomed = list(one.scan_iter(match=f"{pipeline.redis_prefix}:*", count=1000))
        if doomed:
            one.delete(*doomed)
        one.close()
        rc.close()


def test_the_apply_script_is_loaded_again_when_a_node_forgot_it(
    pipeline: PipelineSettings, cluster: LocalRedis
) -> None:
    """A primary that restarted (or failed over) has an empty script cache: the Applier loads
    the script again and sends the batch again, harmlessly."""
    on_cluster = pipeline.model_copy(update={"redis_url": cluster.url, "redis_cluster": True})
    rc = redis_client(on_cluster)
    prefix = pipeline.redis_prefix
    applier = Applier(rc, prefix)
    first = [plan(e, SINK, prefix) for e in traffic(20, seed=1)]
    assert {o.status for o in applier.apply(first)} <= {0, 1}
    for port in cluster.ports:
        cluster.node(port).script_flush()
    more = [plan(e, SINK, prefix) for e in traffic(40, seed=1)]  # the first 20 again
    outcomes = applier.apply(more)
    assert [o.status for o in outcomes[:20]] == [0] * 20
    one = redis.Redis.from_url(pipeline.redis_url, decode_responses=True)
    try:
        Applier(one, prefix).apply(more)
        for store in ("s1", "s2", "ny"):
            for day in {(T0 + timedelta(days=d)).date() for d in range(3)}:
                got = store_stats(store, day, on_cluster, client=rc)
                assert got == store_stats(store, day, pipeline, client=one)
    finally:
        doomed = list(one.scan_iter(match=f"{prefix}:*", count=1000))
        if doomed:
            one.delete(*doomed)
        one.close()
        rc.close()

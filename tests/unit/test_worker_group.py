"""The worker's group membership against a broker that replays assignments (Tansu) and kafka-python's lost rejoin."""

from __future__ import annotations

import threading

from kafka.cluster import ClusterMetadata
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.protocol import ConsumerProtocolMemberMetadata_v0
from kafka.coordinator.subscription import Subscription
from kafka.protocol.metadata import MetadataResponse

from maskwatch.store import BatchWrite
from worker.app import consumer_config
from worker.consumer import Range, Worker, _Rebalance
from worker.health import Health, keep_rejoin_pending
from worker.inference import InFlight
from worker.settings import WorkerSettings


def cluster(topics: dict[str, int]) -> ClusterMetadata:
    """Metadata of one broker holding `topics` (name -> partition count)."""
    c = ClusterMetadata()
    c.update_metadata(
        MetadataResponse[0](
            [(0, "localhost", 9092)],
            [(0, t, [(0, p, 0, [0], [0]) for p in range(n)]) for t, n in topics.items()],
        )
    )
    return c


def members(*topics: str) -> dict[str, Subscription]:
    meta = ConsumerProtocolMemberMetadata_v0(0, list(topics), b"")
    return {m: Subscription(meta, None) for m in ("w1", "w2")}


def test_assigns_as_kafka_pythons_range_assignor() -> None:
    c, subs = cluster({"a": 4, "b": 3}), members("a", "b")
    r = Range()
    assert r.assign(c, subs) == RangePartitionAssignor.assign(c, subs)
    assert r.name == "range" and r.epoch == 0


def test_an_assignment_without_a_subscribed_topic_changes_the_join_metadata() -> None:
    """So the rejoin once the topic exists is a new generation even for a broker that replays an unchanged one."""
    r = Range()
    before = r.metadata(["a", "b"])
    got = r.assign(cluster({"a": 2}), members("a", "b"))
    assert {tp for m in got.values() for tp, _ in m.assignment} == {"a"}  # "b" has no owner yet
    after = r.metadata(["a", "b"])
    assert after.topics == before.topics == ["a", "b"]
    assert after.user_data != before.user_data
    r.assign(cluster({"a": 2, "b": 2}), members("a", "b"))  # every topic known: nothing to change
    assert r.metadata(["a", "b"]).user_data == after.user_data


def test_the_consumer_offers_only_this_assignor() -> None:
    strategies = consumer_config(WorkerSettings(group="g", worker_id="w1"))["partition_assignment_strategy"]
    assert [type(s) for s in strategies] == [Range]


class FakeCoordinator:
    def __init__(self, rejoining: bool, rejoin_needed: bool) -> None:
        self.rejoining = rejoining
        self.rejoin_needed = rejoin_needed

    def request_rejoin(self) -> None:
        self.rejoin_needed = True


class FakeConsumer:
    """A consumer whose polls record the coordinator's rejoin flag as each poll starts, then clear it as a poll that
    times out mid-join does (kafka-python 2.3)."""

    def __init__(self, coordinator: FakeCoordinator) -> None:
        self._coordinator = coordinator
        self.flag_at_poll: list[bool] = []

    def assignment(self) -> set[object]:
        return set()

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[object, list[object]]:
        self.flag_at_poll.append(self._coordinator.rejoin_needed)
        self._coordinator.rejoin_needed = False
        return {}


def keep(rejoining: bool, rejoin_needed: bool) -> bool:
    c = FakeCoordinator(rejoining, rejoin_needed)
    keep_rejoin_pending(FakeConsumer(c))  # type: ignore[arg-type]
    return c.rejoin_needed


def test_a_join_under_way_keeps_its_rejoin_flag() -> None:
    """A join the client started stays pending until a poll finishes it; none started, none requested."""
    assert keep(rejoining=True, rejoin_needed=False) is True
    assert keep(rejoining=True, rejoin_needed=True) is True
    assert keep(rejoining=False, rejoin_needed=False) is False


def test_a_join_that_starts_while_the_worker_backs_off_is_kept_pending_too() -> None:
    """The backoff's polls (a dead model server or Redis) finish a rebalance as the main loop's do."""
    consumer = FakeConsumer(FakeCoordinator(rejoining=True, rejoin_needed=False))
    health = Health(WorkerSettings(retry_max_s=0.05), consumer, None, threading.Event(), set())  # type: ignore[arg-type]
    health.wait_backoff(0)
    assert consumer.flag_at_poll and all(consumer.flag_at_poll)


class DoneAfter:
    """A Predict's future, done once the consumer has polled `polls` times."""

    def __init__(self, consumer: FakeConsumer, polls: int) -> None:
        self.consumer, self.polls = consumer, polls

    def done(self) -> bool:
        return len(self.consumer.flag_at_poll) >= self.polls


def test_every_poll_beside_a_predict_keeps_a_join_pending() -> None:
    """The worker polls in short slices while a Predict runs; the join must stay pending in each of them."""
    consumer = FakeConsumer(FakeCoordinator(rejoining=True, rejoin_needed=False))
    w = Worker(WorkerSettings(poll_timeout_ms=10_000), consumer, None, None, None, threading.Event())  # type: ignore[arg-type]
    w.poll_beside(InFlight(batch=BatchWrite(), frames=[], records=1, dead=[], future=DoneAfter(consumer, 3)))  # type: ignore[arg-type]
    assert consumer.flag_at_poll == [True, True, True]


class FakeClient:
    def __init__(self, topics: set[str]) -> None:
        self.topics = topics

    def set_topics(self, topics: set[str]) -> None:
        self.topics = set(topics)


class FakeSubscription:
    def __init__(self, group: set[str]) -> None:
        self.group = group

    def group_subscription(self) -> set[str]:
        return self.group


def test_after_a_rebalance_metadata_is_asked_only_for_the_groups_topics() -> None:
    """kafka-python set its client's topics on subscribe(), before the join left out the bucket topic just retired:
    once the janitor deletes it, each metadata refresh would log it as an error until the next topic step."""
    consumer = FakeConsumer(FakeCoordinator(rejoining=False, rejoin_needed=False))
    consumer._client = FakeClient({"frames.60", "frames.120", "frames.180"})  # type: ignore[attr-defined]
    consumer._subscription = FakeSubscription({"frames.120", "frames.180"})  # type: ignore[attr-defined]
    w = Worker(WorkerSettings(), consumer, None, None, None, threading.Event())  # type: ignore[arg-type]
    _Rebalance(w).on_partitions_assigned(set())
    assert consumer._client.topics == {"frames.120", "frames.180"}  # type: ignore[attr-defined]

"""The hand-off between capture and encoder: bounded, with the named drop policies."""

from __future__ import annotations

import threading

import pytest

from maskwatch.procs import wait_for
from producer.handoff import Handoff

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    ("policy", "kept", "dropped"),
    [
        ("drop_oldest", [3, 4], 3),  # the freshest frames win
        ("drop_newest", [0, 1], 3),  # what is queued is kept
    ],
)
@pytest.mark.timeout(10)
def test_full_handoff_drops_by_policy(policy: str, kept: list[int], dropped: int) -> None:
    h: Handoff[int] = Handoff(2, policy)  # type: ignore[arg-type]
    assert sum(h.put(i) for i in range(5)) == dropped
    assert [h.get(0.01), h.get(0.01)] == kept
    assert h.get(0.01) is None


@pytest.mark.timeout(10)
def test_wait_policy_paces_the_putter_and_drops_nothing() -> None:
    h: Handoff[int] = Handoff(1, "wait")
    assert h.put(0) == 0
    done = threading.Event()
    result: list[int] = []

    def putter() -> None:
        result.append(h.put(1))
        done.set()

    t = threading.Thread(target=putter)
    t.start()
    assert not done.wait(0.2)  # blocked: the hand-off is full
    assert h.get(1) == 0
    wait_for(done.is_set, 5, "the waiting put to finish")
    assert result == [0] and h.get(1) == 1
    t.join(5)


@pytest.mark.timeout(10)
def test_close_releases_a_waiting_putter_and_getters_drain() -> None:
    h: Handoff[int] = Handoff(1, "wait")
    h.put(7)
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(h.put(8)))
    t.start()
    h.close()
    t.join(5)
    assert result == [1]  # refused: counted as a drop by the caller
    assert h.get(0.01) == 7 and h.get(0.01) is None and h.closed
    assert h.put(9) == 1


@pytest.mark.timeout(10)
def test_get_times_out_empty() -> None:
    h: Handoff[str] = Handoff(3, "drop_oldest")
    assert h.get(0.01) is None and len(h) == 0


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Handoff(0, "drop_oldest")

"""Client counts shared by worker processes (proxy.shared): rows per worker, totals, slots."""

from __future__ import annotations

from proxy.shared import SharedCounts, assign_slots


def test_totals_are_the_sum_of_every_workers_row() -> None:
    reader = SharedCounts.create(3)
    slots = assign_slots({}, ["app", "capped"])
    workers = [SharedCounts(reader.fd, 3, row) for row in range(3)]
    for w in [reader, *workers]:
        w.slots = slots
    workers[0].publish(2, {"app": 2})
    workers[2].publish(3, {"app": 1, "capped": 2})
    assert reader.total() == 5
    assert reader.user_total("app") == 3
    assert reader.user_total("capped") == 2
    assert reader.user_total("nobody") is None
    workers[2].publish(1, {"app": 1})  # a row is rewritten, not added to
    assert reader.total() == 3 and reader.user_total("capped") == 0
    reader.clear_row(0)  # a dead worker's clients are gone
    assert reader.total() == 1 and reader.user_total("app") == 1


def test_slots_are_kept_for_known_users_and_reused_when_free() -> None:
    first = assign_slots({}, ["a", "b", "c"])
    assert len(set(first.values())) == 3
    second = assign_slots(first, ["c", "a", "d"])
    assert second["a"] == first["a"] and second["c"] == first["c"]
    assert second["d"] == first["b"]  # b's slot, free again


def test_a_worker_is_crowded_when_another_serving_one_holds_fewer() -> None:
    reader = SharedCounts.create(3)
    workers = [SharedCounts(reader.fd, 3, row) for row in range(3)]
    workers[0].set_open(5)
    assert not workers[0].crowded()  # no other serves yet
    workers[1].set_open(5)
    assert not workers[0].crowded() and not workers[1].crowded()  # equal: either takes it
    workers[1].set_open(4)
    assert workers[0].crowded() and not workers[1].crowded()
    reader.clear_row(1)  # dead: not counted until it serves again
    assert not workers[0].crowded()
    workers[2].set_open(-1)  # its listener closed (draining)
    assert not workers[0].crowded()


def test_taken_elsewhere_counts_the_other_workers_connections() -> None:
    reader = SharedCounts.create(3)
    workers = [SharedCounts(reader.fd, 3, row) for row in range(3)]
    workers[0].took_one()
    workers[2].took_one()
    workers[2].took_one()
    assert workers[0].taken_elsewhere() == 2
    assert workers[2].taken_elsewhere() == 1
    assert workers[1].taken_elsewhere() == 3

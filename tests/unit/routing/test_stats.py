"""QueryDigests: per-digest counters, bounded in entries and in the text they keep."""

from __future__ import annotations

import copy
import pickle

from proxy.routing.stats import MAX_DIGEST_LENGTH, QueryDigests


def _record(q: QueryDigests, digest_id: int, text: str, **kw: int) -> None:
    q.record(digest_id, text, 1, "replica1", "app", "demo_db", 100, 1, 0, **kw)


def test_digest_text_is_cut_at_max_digest_length() -> None:
    q = QueryDigests()
    long = "select coalesce(" + ",".join(f"c{i}" for i in range(50_000)) + ")"
    _record(q, 1, long)
    _record(q, 2, long, max_digest_length=100)
    texts = {key[-1]: e.digest_text for key, e in q.entries.items()}
    assert texts == {1: long[:MAX_DIGEST_LENGTH], 2: long[:100]}
    _record(q, 1, long)  # counted again, the text kept as it was
    assert [e.count_star for e in q.entries.values()] == [2, 1]


def test_text_kept_is_bounded_so_a_full_report_stays_small() -> None:
    q = QueryDigests(max_entries=1000, max_text_bytes=10_000)
    for i in range(1000):
        _record(q, i, f"select {i} " + "x" * 5000, max_digest_length=1000)
    assert len(q.entries) == 10  # 10 x 1000 bytes: no more text kept
    assert sum(len(e.digest_text) for e in q.entries.values()) == 10_000
    _record(q, 5, "select 5 " + "x" * 5000)  # a known digest is still counted
    assert q.entries[(1, "replica1", "app", "demo_db", 5)].count_star == 2
    q.reset()
    _record(q, 2000, "select 1")
    assert len(q.entries) == 1


def test_worst_case_report_is_well_under_the_channel_bound() -> None:
    """max_entries digests of max length, 4-byte UTF-8 characters: far below 64 MiB."""
    q = QueryDigests()
    for i in range(q.max_entries):
        _record(q, i, "\U0001f600" * 4096, max_digest_length=4096)
    size = len(pickle.dumps(q.entries, pickle.HIGHEST_PROTOCOL))
    assert size < 24 << 20, size


def test_an_entry_copies_and_pickles_whole() -> None:
    q = QueryDigests()
    _record(q, 7, "select ?")
    entry = next(iter(q.entries.values()))
    for twin in (copy.copy(entry), pickle.loads(pickle.dumps(entry, pickle.HIGHEST_PROTOCOL))):
        assert twin == entry and twin is not entry
    twin = copy.copy(entry)
    twin.count_star += 1  # a report's copy is its own
    assert entry.count_star == 1


def test_count_finds_only_the_entry_of_the_same_destination_user_and_schema() -> None:
    q = QueryDigests()
    assert not q.count(7, 1, "replica1", "app", "demo_db", 100, 1, 0)  # no entry yet
    _record(q, 7, "select ?")
    q.record(7, "select ?", 0, "master1", "app", None, 100, 1, 0)
    assert q.count(7, 1, "replica1", "app", "demo_db", 300, 2, 0)
    assert q.count(7, 0, "master1", "app", "", 50, 1, 0)  # no schema: ""
    for other in ((2, "replica1", "app", "demo_db"), (1, "replica2", "app", "demo_db"),
                  (1, "replica1", "bob", "demo_db"), (1, "replica1", "app", "other")):  # fmt: skip
        assert not q.count(7, *other, 100, 1, 0)
    entry = q.entries[(1, "replica1", "app", "demo_db", 7)]
    assert (entry.count_star, entry.sum_time_us, entry.min_time_us, entry.max_time_us) == (
        2, 400, 100, 300
    )  # fmt: skip
    assert entry.sum_rows_sent == 3
    assert q.entries[(0, "master1", "app", "", 7)].min_time_us == 50
    q.reset()
    assert not q.count(7, 1, "replica1", "app", "demo_db", 100, 1, 0)  # gone with the entries


def test_statements_counted_are_last_seen_at_the_ticked_time() -> None:
    q = QueryDigests()
    _record(q, 1, "select 1")  # a new entry reads the clock itself
    entry = q.entries[(1, "replica1", "app", "demo_db", 1)]
    assert entry.first_seen == entry.last_seen == q.now
    q.tick(entry.first_seen + 3.0)
    assert q.count(1, 1, "replica1", "app", "demo_db", 100, 1, 0)
    assert (entry.count_star, entry.last_seen) == (2, entry.first_seen + 3.0)

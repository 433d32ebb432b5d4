"""Microbenchmark of statement digesting and classification (run it; it is not a test).

Generates 10,000 statements with 500 distinct digests (each digest 20 times, with other
literals each time, so the exact-string cache can't make it trivial) and measures:

- cold: a fresh Classifier over the 10,000 (500 analyses, i.e. sqlparse calls, included);
- warm, same strings: the same 10,000 again (exact-string cache hits);
- warm, new literals: 10,000 new strings of the same 500 digests (digest-cache hits), the
  steady state of an application whose literals keep changing;
- compute_digest alone.

Each figure is the best of --repeat runs (the machine may be shared). Three tokenizers are
measured unless --tokenizer says otherwise: sqlparse (the proxy's: sqlparse's lexer table
run by proxy.routing.sqllexer), sqlparse-stock (sqlparse's own Lexer.get_tokens loop, the
same tokens) and regex (no sqlparse at all).

    .venv/bin/python bench/classify.py [--tokenizer sqlparse|sqlparse-stock|regex|all] [--repeat N]
                                       [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.routing.classifier import Classifier
from proxy.routing.digest import compute_digest

TABLES = 50
REPEATS = 20
_PAD = "67847967377-48000963322-62604785301-91415491898-96926520291"


def _shapes(t: str, r: random.Random) -> list[str]:
    """Ten statement shapes on table `t`, with fresh literals: sysbench oltp_* and an ORM."""
    i = r.randint(1, 1_000_000)
    j = i + r.randint(1, 100)
    c = "-".join(str(r.randint(10**10, 10**11 - 1)) for _ in range(10))
    ids = ", ".join(str(r.randint(1, 10**6)) for _ in range(r.randint(2, 9)))
    return [
        f"SELECT c FROM {t} WHERE id={i}",
        f"SELECT c FROM {t} WHERE id BETWEEN {i} AND {j}",
        f"SELECT SUM(k) FROM {t} WHERE id BETWEEN {i} AND {j}",
        f"SELECT c FROM {t} WHERE id BETWEEN {i} AND {j} ORDER BY c",
        f"SELECT DISTINCT c FROM {t} WHERE id BETWEEN {i} AND {j} ORDER BY c",
        f"UPDATE {t} SET k=k+1 WHERE id={i}",
        f"UPDATE {t} SET c='{c}' WHERE id={i}",
        f"DELETE FROM {t} WHERE id={i}",
        f"INSERT INTO {t} (id, k, c, pad) VALUES ({i}, {j}, '{c}', '{_PAD}')",
        f"SELECT {t}.id AS {t}_id, {t}.k AS {t}_k, {t}.c AS {t}_c \nFROM {t} \n"
        f"WHERE {t}.id IN ({ids})",
    ]


def make_workload(seed: int = 42) -> list[str]:
    """REPEATS x TABLES x 10 shapes = 10,000 statements, 500 digests, shuffled."""
    r = random.Random(seed)
    statements = [
        sql
        for _ in range(REPEATS)
        for n in range(1, TABLES + 1)
        for sql in _shapes(f"sbtest{n}", r)
    ]
    r.shuffle(statements)
    return statements


@dataclass
class Figures:
    tokenizer: str
    statements: int
    distinct_digests: int
    cold_total_ms: float
    cold_us_per_statement: float
    cold_sqlparse_calls: int
    warm_same_strings_us_per_statement: float
    warm_new_literals_us_per_statement: float
    compute_digest_us_per_statement: float


def _best(runs: int, body: Callable[[], float]) -> float:
    return min(body() for _ in range(runs))


def _timed(classify: Callable[[str], object], statements: list[str]) -> float:
    start = time.perf_counter()
    for sql in statements:
        classify(sql)
    return time.perf_counter() - start


def measure(
    statements: list[str], tokenizer: Literal["sqlparse", "sqlparse-stock", "regex"], runs: int
) -> Figures:
    n = len(statements)
    cold_calls = 0
    warm: Classifier | None = None

    def cold() -> float:
        nonlocal cold_calls, warm
        classifier = Classifier(tokenizer=tokenizer)
        elapsed = _timed(classifier.classify, statements)
        cold_calls = classifier.sqlparse_calls
        warm = classifier
        return elapsed

    cold_s = _best(runs, cold)
    assert warm is not None
    classifier = warm
    same_s = _best(runs, lambda: _timed(classifier.classify, statements))
    # New strings each run (other seeds), same 500 digests: exact cache misses every time.
    seeds = iter(range(1000, 1000 + runs))
    new_s = _best(runs, lambda: _timed(classifier.classify, make_workload(next(seeds))))
    digest_s = _best(runs, lambda: _timed(compute_digest, statements))
    return Figures(
        tokenizer=tokenizer,
        statements=n,
        distinct_digests=len(classifier.digest_cache),
        cold_total_ms=round(cold_s * 1e3, 2),
        cold_us_per_statement=round(cold_s / n * 1e6, 2),
        cold_sqlparse_calls=cold_calls,
        warm_same_strings_us_per_statement=round(same_s / n * 1e6, 2),
        warm_new_literals_us_per_statement=round(new_s / n * 1e6, 2),
        compute_digest_us_per_statement=round(digest_s / n * 1e6, 2),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Classifier microbenchmark")
    parser.add_argument(
        "--tokenizer",
        choices=("sqlparse", "sqlparse-stock", "regex", "all"),
        default="all",
        help="sqlparse (the proxy's default), sqlparse-stock (sqlparse's own Lexer loop), "
        "regex (no sqlparse); default: all three",
    )
    parser.add_argument("--repeat", type=int, default=5, help="best of N runs (default 5)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    statements = make_workload()
    distinct = len({compute_digest(s).text for s in statements})
    print(
        f"{len(statements)} statements, {distinct} distinct digests, "
        f"{len(set(statements))} distinct strings; best of {args.repeat} runs"
    )
    names: tuple[Literal["sqlparse", "sqlparse-stock", "regex"], ...] = (
        ("sqlparse", "sqlparse-stock", "regex") if args.tokenizer == "all" else (args.tokenizer,)
    )
    results = []
    for name in names:
        f = measure(statements, name, max(1, args.repeat))
        results.append(f)
        print(f"\ntokenizer={f.tokenizer}")
        print(
            f"  cold, fresh Classifier:  {f.cold_total_ms:8.2f} ms total "
            f"{f.cold_us_per_statement:6.2f} us/statement  "
            f"(sqlparse calls: {f.cold_sqlparse_calls})"
        )
        print(
            f"  warm, same strings:                {f.warm_same_strings_us_per_statement:6.2f}"
            " us/statement"
        )
        print(
            f"  warm, new literals:                {f.warm_new_literals_us_per_statement:6.2f}"
            " us/statement"
        )
        print(
            f"  compute_digest alone:              {f.compute_digest_us_per_statement:6.2f}"
            " us/statement"
        )
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(f) for f in results], indent=2) + "\n")


if __name__ == "__main__":
    main()

"""The `mariadb` command-line client: -e batches, a 100,000-row result, errors, a script file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.integration.clients._support import require_tool, run, unique

if TYPE_CHECKING:
    from tests.support.endpoints import Endpoint


def _mariadb(ep: Endpoint, *options: str) -> list[str]:
    """`mariadb` in batch mode (tab-separated, no headers) against the endpoint's database."""
    return [
        require_tool("mariadb"),
        f"--host={ep.host}",
        f"--port={ep.port}",
        "--protocol=TCP",
        f"--user={ep.user}",
        f"--password={ep.password}",
        "--batch",
        "--skip-column-names",
        *options,
        ep.database,
    ]


def test_execute_batch_of_several_statements(
    proxy_endpoint: Endpoint, new_table: Callable[[], str]
) -> None:
    t = new_table()
    sql = (
        f"CREATE TABLE {t} (id INT PRIMARY KEY, name VARCHAR(20));"
        f"INSERT INTO {t} VALUES (1, 'one'), (2, 'two'), (3, 'three');"
        f"UPDATE {t} SET name = 'TWO' WHERE id = 2;"
        f"DELETE FROM {t} WHERE id = 3;"
        f"SELECT id, name FROM {t} ORDER BY id;"
        f"SELECT COUNT(*), DATABASE() FROM {t};"
        f"DROP TABLE {t}"
    )
    out = run(_mariadb(proxy_endpoint, "-e", sql), timeout=30).stdout
    assert out.splitlines() == ["1\tone", "2\tTWO", f"2\t{proxy_endpoint.database}"]


def test_hundred_thousand_row_result_is_streamed_whole(proxy_endpoint: Endpoint) -> None:
    # --quick reads row by row (mysql_use_result) instead of buffering the whole result.
    cmd = _mariadb(proxy_endpoint, "--quick", "-e", "SELECT seq FROM seq_1_to_100000")
    rows = run(cmd, timeout=60).stdout.splitlines()
    assert len(rows) == 100_000
    assert rows[0] == "1"
    assert rows[-1] == "100000"
    assert sum(map(int, rows)) == 100_000 * 100_001 // 2


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM {missing}", "ERROR 1146 (42S02) at line 1: Table '{db}.{missing}'"),
        ("SELEC 1", "ERROR 1064 (42000) at line 1: You have an error in your SQL syntax"),
        ("SELECT 1 FROM DUAL WHERE no_such_col = 1", "ERROR 1054 (42S22) at line 1: Unknown"),
    ],
    ids=["unknown-table", "syntax", "unknown-column"],
)
def test_error_shows_errno_and_sqlstate(proxy_endpoint: Endpoint, sql: str, expected: str) -> None:
    missing = unique("no_such_table")
    db = proxy_endpoint.database
    proc = run(_mariadb(proxy_endpoint, "-e", sql.format(missing=missing)), timeout=30, check=False)
    assert proc.returncode == 1
    assert expected.format(db=db, missing=missing) in proc.stderr
    assert proc.stdout == ""


def test_error_stops_the_batch_at_its_line(proxy_endpoint: Endpoint) -> None:
    missing = unique("no_such_table")
    sql = f"SELECT 'before';\nSELECT * FROM {missing};\nSELECT 'after'"
    proc = run(_mariadb(proxy_endpoint, "-e", sql), timeout=30, check=False)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == ["before"]
    assert "ERROR 1146 (42S02) at line 2" in proc.stderr


def test_crud_script_file_on_stdin(
    proxy_endpoint: Endpoint, new_table: Callable[[], str], tmp_path: Path
) -> None:
    t = new_table()
    script = tmp_path / "crud.sql"
    script.write_text(
        f"""-- a CRUD session, as `mariadb db < crud.sql` runs it
CREATE TABLE {t} (
    id INT AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(40) NOT NULL,
    qty INT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO {t} (name, qty)
VALUES ('apple', 3), ('pear', 5), ('kiwi', 7), ('fig 🍇', 9);
UPDATE {t} SET qty = qty + 10 WHERE name = 'pear';
DELETE FROM {t} WHERE name = 'kiwi';
START TRANSACTION;
INSERT INTO {t} (name, qty) VALUES ('rolled back', 0);
ROLLBACK;
/* a block comment; then read everything back */
SELECT name, qty FROM {t} ORDER BY name;
SELECT COUNT(*), SUM(qty) FROM {t};
DROP TABLE {t};
"""
    )
    with script.open() as stdin:
        out = run(
            _mariadb(proxy_endpoint, "--default-character-set=utf8mb4"), timeout=30, stdin=stdin
        ).stdout
    assert out.splitlines() == ["apple\t3", "fig 🍇\t9", "pear\t15", "3\t27"]

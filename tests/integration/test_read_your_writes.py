"""Read-your-writes with reads split: every client, 1,000-iteration loops, a delayed replica."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncmy
import mysql.connector
import pymysql
import pytest
from sqlalchemy import Integer, create_engine, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from proxy.lab.lab import Lab
from proxy.testing import ProxyThread
from tests.integration.clients._support import (
    HERE,
    client_env,
    require_tool,
    run_json,
)
from tests.support.endpoints import Endpoint, proxy_config
from tests.support.servers import delayed_replicas

ITERATIONS = 1000
DELAY_S = 2  # replica2 applies everything this late (MASTER_DELAY)
CONNECTOR_J = Path("/usr/share/java/mariadb-java-client.jar")


@pytest.fixture(scope="module")
def delayed(lab: Lab) -> Iterator[Lab]:
    """replica2 lags DELAY_S behind (a delayed replica) for the whole module."""
    with delayed_replicas(lab, ("replica2",), DELAY_S):
        yield lab


@pytest.fixture(scope="module")
def ryw_proxy(delayed: Lab) -> Iterator[ProxyThread]:
    # Lag below the shunning limit: replica2 stays in the read pool, so only the
    # read-your-writes logic keeps sessions from reading stale data there.
    config = proxy_config(
        delayed, routing={"consistency": "read_your_writes"}, health={"max_replication_lag_s": 30}
    )
    thread = ProxyThread(config).start()
    try:
        yield thread
    finally:
        thread.stop()


@pytest.fixture
def ep(ryw_proxy: ProxyThread) -> Endpoint:
    return Endpoint("127.0.0.1", ryw_proxy.port, "app", "app-pass", "demo_db")


CREATE = "CREATE TABLE {} (id INT PRIMARY KEY, v INT NOT NULL)"


@pytest.fixture
def table(ep: Endpoint) -> Iterator[str]:
    """A table name; each client creates the table itself, in the session under test."""
    name = f"ryw_{uuid.uuid4().hex[:8]}"
    yield name
    conn = _pymysql(ep)
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {name}")
    conn.close()


def _pymysql(ep: Endpoint) -> pymysql.Connection:
    return ep.connect()


def _loop(
    execute: Callable[[str, tuple[object, ...]], list[tuple[object, ...]]],
    table: str,
    iterations: int = ITERATIONS,
) -> int:
    """INSERT then SELECT it; UPDATE then SELECT the new value; CREATE TABLE then SELECT."""

    def read(sql: str, args: tuple[object, ...]) -> list[tuple[object, ...]] | None:
        try:
            return execute(sql, args)
        except (pymysql.err.ProgrammingError, mysql.connector.Error):
            return None  # e.g. "table doesn't exist" on a replica that is behind: stale

    execute(CREATE.format(table), ())
    stale = 0
    for i in range(iterations):
        execute(f"INSERT INTO {table} (id, v) VALUES (%s, 0)", (i,))
        got = read(f"SELECT v FROM {table} WHERE id = %s", (i,))
        if got is None or len(got) != 1:
            stale += 1
        execute(f"UPDATE {table} SET v = %s WHERE id = %s", (i + 1, i))
        if read(f"SELECT v FROM {table} WHERE id = %s", (i,)) != [(i + 1,)]:
            stale += 1
        if i % 50 == 0:
            execute(f"CREATE TABLE {table}_{i} (id INT)", ())
            if read(f"SELECT COUNT(*) FROM {table}_{i}", ()) is None:
                stale += 1
            execute(f"DROP TABLE {table}_{i}", ())
    return stale


def _pymysql_executor(conn: pymysql.Connection) -> Callable[..., list[tuple[object, ...]]]:
    def execute(sql: str, args: tuple[object, ...]) -> list[tuple[object, ...]]:
        with conn.cursor() as cur:
            cur.execute(sql, args or None)
            return [tuple(r) for r in cur.fetchall()]

    return execute


def _report(ryw_proxy: ProxyThread, client: str, stale: int) -> None:
    m = ryw_proxy.server.metrics
    print(
        f"\n{client}: {ITERATIONS} iterations, stale reads {stale}; GTID waits "
        f"{dict(m.gtid_waits)}, reads sent to the writer {m.consistency_reads_to_writer}"
    )


def test_pymysql(ryw_proxy: ProxyThread, ep: Endpoint, table: str) -> None:
    conn = _pymysql(ep)
    stale = _loop(_pymysql_executor(conn), table)
    conn.close()
    _report(ryw_proxy, "PyMySQL", stale)
    assert stale == 0


@pytest.mark.parametrize("prepared", [False, True], ids=["text", "prepared"])
def test_mysql_connector(ryw_proxy: ProxyThread, ep: Endpoint, table: str, prepared: bool) -> None:
    conn = ep.connector()
    cur = conn.cursor(prepared=prepared)

    def execute(sql: str, args: tuple[object, ...]) -> list[tuple[object, ...]]:
        cur.execute(sql.replace("%s", "?") if prepared else sql, args or ())
        return [tuple(r) for r in cur.fetchall()] if cur.with_rows else []

    stale = _loop(execute, table)
    conn.close()
    _report(ryw_proxy, f"mysql-connector ({'prepared' if prepared else 'text'})", stale)
    assert stale == 0


def test_asyncmy(ryw_proxy: ProxyThread, ep: Endpoint, table: str) -> None:
    async def main() -> int:
        conn = await asyncmy.connect(**ep.params())
        stale = 0
        async with conn.cursor() as cur:
            await cur.execute(CREATE.format(table))

            async def q(sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
                await cur.execute(sql, args or None)
                return [tuple(r) for r in await cur.fetchall()]

            for i in range(ITERATIONS):
                await q(f"INSERT INTO {table} (id, v) VALUES (%s, 0)", (i,))
                stale += len(await q(f"SELECT v FROM {table} WHERE id = %s", (i,))) != 1
                await q(f"UPDATE {table} SET v = %s WHERE id = %s", (i + 1, i))
                stale += await q(f"SELECT v FROM {table} WHERE id = %s", (i,)) != [(i + 1,)]
                if i % 50 == 0:
                    await q(f"CREATE TABLE {table}_{i} (id INT)")
                    try:
                        await q(f"SELECT COUNT(*) FROM {table}_{i}")
                    except Exception:
                        stale += 1
                    await q(f"DROP TABLE {table}_{i}")
        conn.close()
        return stale

    stale = asyncio.run(main())
    _report(ryw_proxy, "asyncmy", stale)
    assert stale == 0


class Base(DeclarativeBase):
    pass


def test_sqlalchemy_session_sees_what_it_committed(ryw_proxy: ProxyThread, ep: Endpoint) -> None:
    name = f"ryw_orm_{uuid.uuid4().hex[:8]}"

    class Item(Base):
        __tablename__ = name
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        v: Mapped[int] = mapped_column(Integer)

    # AUTOCOMMIT: each statement commits on its own, so reads really are split to replicas.
    engine = create_engine(
        f"mysql+pymysql://{ep.user}:{ep.password}@{ep.host}:{ep.port}/{ep.database}",
        isolation_level="AUTOCOMMIT",
        pool_size=1,
    )
    Base.metadata.create_all(engine, tables=[Item.__table__])  # type: ignore[list-item]
    stale = 0
    try:
        with Session(engine) as session:
            for i in range(1, ITERATIONS + 1):  # id 0 would mean "auto-increment"
                session.add(Item(id=i, v=i))
                session.commit()
                got = session.scalars(select(Item.v).where(Item.id == i)).all()
                stale += got != [i]
                session.execute(
                    text(f"UPDATE {name} SET v = :v WHERE id = :id"), {"v": i + 1, "id": i}
                )
                session.commit()
                stale += session.scalars(select(Item.v).where(Item.id == i)).all() != [i + 1]
    finally:
        Base.metadata.drop_all(engine, tables=[Item.__table__])  # type: ignore[list-item]
        engine.dispose()
    _report(ryw_proxy, "SQLAlchemy ORM", stale)
    assert stale == 0


def test_mariadb_cli(ryw_proxy: ProxyThread, ep: Endpoint, table: str) -> None:
    lines = [CREATE.format(table) + ";"]
    for i in range(ITERATIONS):
        lines += [
            f"INSERT INTO {table} (id, v) VALUES ({i}, 0);",
            f"SELECT CONCAT('a{i}=', COUNT(*)) FROM {table} WHERE id = {i};",
            f"UPDATE {table} SET v = {i + 1} WHERE id = {i};",
            f"SELECT CONCAT('b{i}=', v) FROM {table} WHERE id = {i};",
        ]
        if i % 50 == 0:
            lines += [
                f"CREATE TABLE {table}_{i} (id INT);",
                f"SELECT CONCAT('c{i}=', COUNT(*)) FROM {table}_{i};",
                f"DROP TABLE {table}_{i};",
            ]
    cli = require_tool("mariadb")
    proc = subprocess.run(
        [
            cli,
            "-h",
            ep.host,
            "-P",
            str(ep.port),
            "-u",
            ep.user,
            f"-p{ep.password}",
            "-N",
            "-B",
            "--force",
            ep.database,
        ],
        input="\n".join(lines),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    got = set(proc.stdout.split())
    want = (
        {f"a{i}=1" for i in range(ITERATIONS)}
        | {f"b{i}={i + 1}" for i in range(ITERATIONS)}
        | {f"c{i}=0" for i in range(0, ITERATIONS, 50)}
    )
    stale = len(want - got)
    _report(ryw_proxy, "mariadb CLI", stale)
    assert stale == 0, proc.stderr[-2000:]


# Clients driven by a script in their own language: (name, command prefix before the args).
SCRIPTS = {
    "Node mysql2 (query)": (["node", str(HERE / "node" / "ryw.js")], ["query"]),
    "Node mysql2 (execute)": (["node", str(HERE / "node" / "ryw.js")], ["execute"]),
    "PHP PDO": (["php", str(HERE / "ryw.php")], []),
    "Perl DBD::MariaDB": (["perl", str(HERE / "ryw.pl")], []),
    "JDBC Connector/J": (["java", "-cp", str(CONNECTOR_J), str(HERE / "Ryw.java")], []),
}


@pytest.mark.parametrize("client", list(SCRIPTS))
def test_script_clients(ryw_proxy: ProxyThread, ep: Endpoint, table: str, client: str) -> None:
    prefix, extra = SCRIPTS[client]
    tool = require_tool(prefix[0])
    if client.startswith("JDBC"):
        assert CONNECTOR_J.exists(), "MariaDB Connector/J is missing (libmariadb-java)"
    out = run_json(
        [tool, *prefix[1:], table, str(ITERATIONS), *extra], timeout=300, env=client_env(ep)
    )
    _report(ryw_proxy, client, out["stale"])
    assert out == {"iterations": ITERATIONS, "stale": 0}


def test_eventual_consistency_shows_stale_reads(delayed: Lab, table: str, ep: Endpoint) -> None:
    """The same loop with consistency=eventual (ProxySQL's behaviour) reads stale data."""
    config = proxy_config(
        delayed, routing={"consistency": "eventual"}, health={"max_replication_lag_s": 30}
    )
    eventual = ProxyThread(config).start()
    try:
        conn = _pymysql(Endpoint("127.0.0.1", eventual.port, "app", "app-pass", "demo_db"))
        stale = _loop(_pymysql_executor(conn), table, iterations=100)
        conn.close()
    finally:
        eventual.stop()
    print(f"\neventual consistency: 100 iterations, stale reads {stale}")
    assert stale > 0


def test_reads_without_writes_stay_on_replicas(
    ryw_proxy: ProxyThread, ep: Endpoint, delayed: Lab
) -> None:
    conn = _pymysql(ep)
    seen = Counter(_pymysql_executor(conn)("SELECT @@server_id", ())[0][0] for _ in range(500))
    conn.close()
    on_replicas = seen[101] + seen[102]
    print(f"\nno writes: {on_replicas / 5:.0f}% of 500 reads on replicas ({dict(seen)})")
    assert on_replicas >= 450

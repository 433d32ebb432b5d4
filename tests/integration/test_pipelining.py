"""Pipelined commands through the real pyproxy process: answered in order, whoever runs them.

A plain statement on a ready backend connection is run from the client's data_received; a
ping, a read that must first check a replica (read-your-writes) or a statement needing a
connection is run (or finished) by the session's task. A pipeline mixing them must get every
answer, in the order sent.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.lab.lab import Lab
from proxy.protocol.constants import Command
from proxy.protocol.packets import build_command
from proxy.protocol.response import ResponseScanner
from tests.support.proxyproc import LabProxy, RawClient, lab_proxy, start_lab_proxy

TABLE = "pipelined_rows"


@pytest.fixture(scope="module")
def proxy(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProxy]:
    with lab_proxy(lab, tmp_path_factory.mktemp("pipelining")) as running:
        setup = running.connect()
        with setup.cursor() as cur:
            cur.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id INT PRIMARY KEY)")
            cur.execute(f"DELETE FROM {TABLE}")
        setup.close()
        yield running


def _responses(
    client: RawClient, commands: list[int], out: list[ResponseScanner] | None = None
) -> list[ResponseScanner]:
    """Read one whole response per command, in order, from one byte stream, into out (what
    was read stays there when the proxy hangs up: ConnectionError)."""
    out = [] if out is None else out
    data = client.reader.take_buffered()
    for command in commands:
        scanner = ResponseScanner(command, client.caps)
        while True:
            if data:
                data = data[scanner.feed(data) :]
            if scanner.done:
                break
            chunk = client.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError(f"the proxy hung up after {len(out)} answers")
            data += chunk
        out.append(scanner)
    return out


def test_a_mixed_pipeline_is_answered_in_order(proxy: LabProxy) -> None:
    """300 commands sent in one write: failing reads naming their position (run from
    data_received), INSERTs, pings (run by the task), reads of a row just written (checked
    against the replica first: handed to the task) and executes of a prepared statement."""
    client = RawClient(proxy.port, timeout=30)
    client.login(proxy.user, proxy.password, "demo_db")
    stmt_id = client.prepare(f"SELECT id FROM {TABLE} WHERE id = 1")
    execute = stmt_id.to_bytes(4, "little") + b"\x00\x01\x00\x00\x00"
    pipeline: list[bytes] = []
    commands: list[int] = []
    expected: list[str] = []
    for n in range(300):
        kind = n % 5
        if kind == 0:
            pipeline.append(build_command(Command.COM_QUERY, f"SELECT * FROM nosuch_{n}".encode()))
            commands.append(Command.COM_QUERY)
            expected.append(f"error nosuch_{n}")
        elif kind == 1:
            sql = f"INSERT INTO {TABLE} VALUES ({n})"
            pipeline.append(build_command(Command.COM_QUERY, sql.encode()))
            commands.append(Command.COM_QUERY)
            expected.append("affected 1")
        elif kind == 2:
            pipeline.append(build_command(Command.COM_PING))
            commands.append(Command.COM_PING)
            expected.append("ok")
        elif kind == 3:
            sql = f"SELECT id FROM {TABLE} WHERE id = {n - 2}"
            pipeline.append(build_command(Command.COM_QUERY, sql.encode()))
            commands.append(Command.COM_QUERY)
            expected.append("rows 1")
        else:
            pipeline.append(build_command(Command.COM_STMT_EXECUTE, execute))
            commands.append(Command.COM_STMT_EXECUTE)
            expected.append("rows 1")  # row 1 was written by the second command
    client.send(b"".join(pipeline))
    got: list[str] = []
    for scanner in _responses(client, commands):
        if scanner.error is not None:
            name = scanner.error.message.split("'")[1].split(".")[-1]
            got.append(f"error {name}")
        elif scanner.is_result_set:
            got.append(f"rows {scanner.rows}")
        elif scanner.affected_rows:
            got.append(f"affected {scanner.affected_rows}")
        else:
            got.append("ok")
    client.close()
    assert got == expected


def test_a_slow_reader_gets_its_next_answer_after_a_big_result(proxy: LabProxy) -> None:
    """A client that reads a 24 MiB result in small sips with pauses makes the proxy stop
    and resume reading the backend (its send buffer fills and drains). However the result's
    last bytes meet a full buffer, the backend connection must not stay paused: the next
    statement on the session is answered."""
    client = RawClient(proxy.port, timeout=20)
    client.login(proxy.user, proxy.password, "demo_db")
    for _ in range(3):
        client.query("BEGIN")  # one backend connection for the whole test: the writer's
        assert _responses(client, [Command.COM_QUERY])[0].error is None
        client.query("SELECT REPEAT('x', 1 << 20) FROM seq_1_to_24")
        scanner = ResponseScanner(Command.COM_QUERY, client.caps)
        data = client.reader.take_buffered()
        while True:
            if data:
                data = data[scanner.feed(data) :]
            if scanner.done:
                break
            time.sleep(0.002)
            chunk = client.sock.recv(64 << 10)
            assert chunk, "the proxy hung up mid-result"
            data += chunk
        assert scanner.error is None and scanner.rows == 24
        client.reader.feed(data)
        client.query("COMMIT")
        assert _responses(client, [Command.COM_QUERY])[0].error is None
    client.close()


def test_sigterm_answers_every_write_it_ran(lab: Lab, tmp_path: Path) -> None:
    """SIGTERM while sessions pipeline INSERTs: the statement each one runs finishes and is
    answered, and no session starts another (it is closed instead), so every row that
    landed was acknowledged to its client."""
    proxy = start_lab_proxy(lab, tmp_path)
    table = "sigterm_rows"
    try:
        setup = proxy.connect()
        with setup.cursor() as cur:
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (id INT AUTO_INCREMENT PRIMARY KEY, s INT)"
            )
            cur.execute(f"DELETE FROM {table}")
        setup.close()
        acked = [0] * 6
        errors: list[str] = []
        clients = [RawClient(proxy.port, timeout=30) for _ in acked]
        for client in clients:
            client.login(proxy.user, proxy.password, "demo_db")

        def pipeline(i: int) -> None:
            client = clients[i]
            insert = build_command(
                Command.COM_QUERY, f"INSERT INTO {table} (s) VALUES ({i})".encode()
            )
            answers: list[ResponseScanner] = []
            try:
                while True:
                    client.send(insert * 20)
                    _responses(client, [Command.COM_QUERY] * 20, answers)
            except OSError:  # ConnectionError too: the proxy closed the session
                pass
            errors.extend(str(a.error) for a in answers if a.error is not None)
            acked[i] = len(answers)

        threads = [threading.Thread(target=pipeline, args=(i,)) for i in range(len(acked))]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        assert proxy.proc is not None
        proxy.proc.send_signal(signal.SIGTERM)
        assert proxy.proc.wait(20) == 0, proxy.log_tail()
        for thread in threads:
            thread.join(20)
    finally:
        proxy.stop()
    landed: dict[int, int] = {}
    for name in ("master1", "master2"):  # the writer has them all; the other may lag
        conn = lab.connect_app(name, database="demo_db")
        with conn.cursor() as cur:
            cur.execute(f"SELECT s, COUNT(*) FROM {table} GROUP BY s")
            for s, count in cur.fetchall():
                landed[s] = max(landed.get(s, 0), count)
        conn.close()
    assert not errors and min(acked) > 0, errors
    assert [landed.get(i, 0) for i in range(len(acked))] == acked

"""Normalize replica status rows from MariaDB and MySQL into one shape."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """One replication channel as seen on the replica, whatever the server flavor."""

    source_host: str
    source_port: int
    io_running: str  # "Yes" / "No" / "Connecting"
    sql_running: str
    seconds_behind: int | None
    last_io_error: str
    last_sql_error: str
    last_io_errno: int
    last_sql_errno: int
    gtid_position: str  # MariaDB Gtid_IO_Pos, MySQL Executed_Gtid_Set
    retrieved_gtid: str = ""  # received from the source: MariaDB Gtid_IO_Pos, MySQL Retrieved
    read_position: tuple[str, int] = ("", 0)  # source binlog file/pos the IO thread has read
    exec_position: tuple[str, int] = ("", 0)  # ...and the SQL thread has applied
    sql_state: str = ""  # Slave_SQL_Running_State / Replica_SQL_Running_State

    @property
    def applied_all_received(self) -> bool:
        """The SQL thread has applied every complete transaction the IO thread received.

        After the source died mid-transaction the relay log may end in an incomplete one that
        can never apply (the positions then differ for good): the SQL thread's state saying
        it has read all the relay log is the signal for that case.
        """
        return self.read_position == self.exec_position or (
            "read all relay log" in self.sql_state.lower()
        )

    @property
    def healthy(self) -> bool:
        return self.io_running == "Yes" and self.sql_running == "Yes"

    @property
    def last_error(self) -> str:
        return self.last_sql_error or self.last_io_error


def _pick(row: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    # MySQL 8.4 renamed Master_*/Slave_* columns to Source_*/Replica_*; MariaDB kept the old ones.
    for name in names:
        if name in row:
            return row[name]
    return default


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", "replace")
    return str(value)


def normalize_replica_status(row: Mapping[str, Any]) -> ReplicaStatus:
    """Build a ReplicaStatus from one row of SHOW SLAVE STATUS or SHOW REPLICA STATUS."""
    behind = _pick(row, "Seconds_Behind_Source", "Seconds_Behind_Master")
    gtid = _pick(row, "Gtid_IO_Pos", "Executed_Gtid_Set", default="")
    return ReplicaStatus(
        source_host=_text(_pick(row, "Source_Host", "Master_Host", default="")),
        source_port=int(_pick(row, "Source_Port", "Master_Port", default=0) or 0),
        io_running=_text(_pick(row, "Replica_IO_Running", "Slave_IO_Running", default="No")),
        sql_running=_text(_pick(row, "Replica_SQL_Running", "Slave_SQL_Running", default="No")),
        seconds_behind=None if behind is None or behind == "" else int(behind),
        last_io_error=_text(_pick(row, "Last_IO_Error", default="")),
        last_sql_error=_text(_pick(row, "Last_SQL_Error", default="")),
        last_io_errno=int(_pick(row, "Last_IO_Errno", default=0) or 0),
        last_sql_errno=int(_pick(row, "Last_SQL_Errno", default=0) or 0),
        gtid_position=_text(gtid).replace("\n", ""),
        retrieved_gtid=_text(_pick(row, "Gtid_IO_Pos", "Retrieved_Gtid_Set", default="")).replace(
            "\n", ""
        ),
        read_position=(
            _text(_pick(row, "Source_Log_File", "Master_Log_File", default="")),
            int(_pick(row, "Read_Source_Log_Pos", "Read_Master_Log_Pos", default=0) or 0),
        ),
        sql_state=_text(
            _pick(row, "Replica_SQL_Running_State", "Slave_SQL_Running_State", default="")
        ),
        exec_position=(
            _text(_pick(row, "Relay_Source_Log_File", "Relay_Master_Log_File", default="")),
            int(_pick(row, "Exec_Source_Log_Pos", "Exec_Master_Log_Pos", default=0) or 0),
        ),
    )

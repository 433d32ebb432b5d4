"""Session state a client has set, and the steps that bring a backend connection to it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

# Collation id -> (character set, collation): the ids clients send in their handshake.
COLLATIONS: dict[int, tuple[str, str]] = {
    8: ("latin1", "latin1_swedish_ci"),
    33: ("utf8mb3", "utf8mb3_general_ci"),
    45: ("utf8mb4", "utf8mb4_general_ci"),
    46: ("utf8mb4", "utf8mb4_bin"),
    47: ("latin1", "latin1_bin"),
    48: ("latin1", "latin1_general_ci"),
    63: ("binary", "binary"),
    83: ("utf8mb3", "utf8mb3_bin"),
    192: ("utf8mb3", "utf8mb3_unicode_ci"),
    224: ("utf8mb4", "utf8mb4_unicode_ci"),
    # MySQL 8's default; MariaDB before 11.4 does not know it, utf8mb4's default stands in.
    255: ("utf8mb4", "utf8mb4_0900_ai_ci"),
}


def set_names_sql(collation_id: int, mariadb: bool) -> str:
    charset, collation = COLLATIONS.get(collation_id, ("utf8mb4", ""))
    if not collation or (mariadb and collation.endswith("_0900_ai_ci")):
        return f"SET NAMES {charset}"
    return f"SET NAMES {charset} COLLATE {collation}"


def gtid_tracking_sql(mariadb: bool, session_track: bool) -> str | None:
    """What a fresh (or reset) backend connection is asked so that its OK packets carry each
    commit's GTID (causal reads and read-your-writes learn it there instead of asking the
    writer): MySQL tracks GTIDs only when asked, per session (SESSION_TRACK_GTIDS entries).
    MariaDB's last_gtid comes with the server's session_track_system_variables; nothing to
    ask. Without CLIENT_SESSION_TRACK the OK packets carry no tracking at all."""
    if mariadb or not session_track:
        return None
    return "SET SESSION session_track_gtids = OWN_GTID"


# sql_mode set to a plain string, the only value read here: `SET sql_mode = 'A,B'`.
_SQL_MODE = re.compile(r"""\bsql_mode\s*:?=\s*(['"])([\w,\s]*)\1\s*(?:,|;|$)""", re.IGNORECASE)


class StepKind(Enum):
    RESET = "reset"  # COM_RESET_CONNECTION: the connection carries state the session lacks
    INIT_DB = "init_db"
    SET_OPTION = "set_option"  # COM_SET_OPTION: multi-statements on/off
    QUERY = "query"


@dataclass(frozen=True, slots=True)
class Step:
    kind: StepKind
    arg: str = ""


@dataclass
class SessionState:
    """What a client asked for, or what a backend connection currently has.

    `variables` maps a normalized name (e.g. "time_zone", "names") to the SET statement that
    produces it, so replaying is re-running the client's own statement.
    """

    schema: str | None = None
    collation: int = 45
    autocommit: bool = True
    multi_statements: bool = False
    variables: dict[str, str] = field(default_factory=dict)
    # A connection left with state nobody tracks (user variables, temporary tables, locks,
    # an open transaction): it is reset before anyone else uses it.
    tainted: bool = False

    def backslash_escapes(self) -> bool | None:
        """Do the session's strings treat backslash as an escape? None: not known here (the
        server's default sql_mode, or sql_mode set to an expression)."""
        for name, sql in self.variables.items():
            if "sql_mode" in name.split(","):
                m = _SQL_MODE.search(sql)
                return None if m is None else "NO_BACKSLASH_ESCAPES" not in m.group(2).upper()
        return None

    def copy(self) -> SessionState:
        return SessionState(
            self.schema,
            self.collation,
            self.autocommit,
            self.multi_statements,
            dict(self.variables),
        )


def in_sync(want: SessionState, have: SessionState) -> bool:
    """A connection in state `have` runs the session's commands as they are (sync_steps
    would return no step): the per-statement check, with no list built."""
    return (
        want.variables == have.variables
        and not have.tainted
        and (not want.schema or want.schema == have.schema)
        and want.multi_statements == have.multi_statements
        and want.autocommit == have.autocommit
        and (want.collation == have.collation or "names" in want.variables)
    )


def sync_steps(want: SessionState, have: SessionState, mariadb: bool) -> list[Step]:
    """The commands that turn a connection's state `have` into the session's `want`.

    A variable the connection has but the session does not (left by an earlier session)
    cannot be unset one by one, so the connection is reset and everything replayed.
    """
    if in_sync(want, have):
        return []  # the usual case, checked before building anything
    steps: list[Step] = []
    stale = have.tainted or any(
        name not in want.variables or want.variables[name] != sql
        for name, sql in have.variables.items()
    )
    if stale:
        steps.append(Step(StepKind.RESET))
        have = SessionState(schema=have.schema, multi_statements=have.multi_statements)
        # After a reset the server is back at its defaults: force a SET NAMES.
        have.collation = -1
    if want.schema and want.schema != have.schema:
        steps.append(Step(StepKind.INIT_DB, want.schema))
    if want.multi_statements != have.multi_statements:
        steps.append(Step(StepKind.SET_OPTION, "on" if want.multi_statements else "off"))
    if want.collation != have.collation and "names" not in want.variables:
        steps.append(Step(StepKind.QUERY, set_names_sql(want.collation, mariadb)))
    for name, sql in want.variables.items():
        if have.variables.get(name) != sql:
            steps.append(Step(StepKind.QUERY, sql))
    if want.autocommit != have.autocommit:
        steps.append(Step(StepKind.QUERY, f"SET autocommit={int(want.autocommit)}"))
    return steps

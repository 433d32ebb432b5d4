"""ProxySQL's three configuration layers: the editable tables (memory), the runtime, the disk
database; the LOAD/SAVE/SET commands between them, and which layer a start begins from."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from proxy.admin import configdb
from proxy.admin.configdb import MODULES, TABLE_NAMES, TableError
from proxy.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from proxy.view import ProxyView

log = logging.getLogger(__name__)
T = TypeVar("T")

_MODULE = r"(servers|users|query\s+rules|variables)"
_MOVE = re.compile(
    rf"^\s*(load|save)\s+mysql\s+{_MODULE}\s+(to|from)\s+(runtime|run|memory|mem|disk|config)"
    r"\s*;?\s*$",
    re.I,
)
# (verb, direction, layer) -> (from layer, to layer), ProxySQL's synonyms included.
_MOVES = {
    ("load", "to", "runtime"): ("memory", "runtime"),
    ("load", "to", "run"): ("memory", "runtime"),
    ("load", "from", "memory"): ("memory", "runtime"),
    ("load", "from", "mem"): ("memory", "runtime"),
    ("save", "to", "memory"): ("runtime", "memory"),
    ("save", "to", "mem"): ("runtime", "memory"),
    ("save", "from", "runtime"): ("runtime", "memory"),
    ("save", "from", "run"): ("runtime", "memory"),
    ("load", "from", "disk"): ("disk", "memory"),
    ("load", "to", "memory"): ("disk", "memory"),
    ("load", "to", "mem"): ("disk", "memory"),
    ("save", "to", "disk"): ("memory", "disk"),
    ("save", "from", "memory"): ("memory", "disk"),
    ("save", "from", "mem"): ("memory", "disk"),
    ("load", "from", "config"): ("config", "memory"),
}
_SET = re.compile(
    r"""^\s*set\s+((?:mysql|pyproxy|admin)-[\w.]+)\s*=\s*"""
    r"""(?:'((?:[^']|'')*)'|"((?:[^"]|"")*)"|([^\s;'"]+))\s*;?\s*$""",
    re.I,
)
_SETS_VARIABLE = re.compile(r"^\s*set\s+(?:mysql|pyproxy|admin)-", re.I)
_SHOW_VARIABLES = re.compile(
    r"^\s*show\s+(?:(?:global|mysql)\s+)?variables(?:\s+like\s+'((?:[^']|'')*)')?\s*;?\s*$", re.I
)
# A statement that names an editable table (not runtime_mysql_servers) or the disk schema.
_NAMES_LAYER = re.compile(
    r"(?<![\w$])(?:disk\s*\.|(?:main\s*\.\s*)?(?:" + "|".join(TABLE_NAMES) + r")(?![\w$]))", re.I
)

# What a statement on the admin's database may do: read anything, change the editable tables
# (main and disk), nothing else (no DDL, ATTACH, PRAGMA, writes to the runtime snapshots).
_ALLOWED = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_RECURSIVE,
}
_WRITES = {sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE}
READ_ONLY = (
    "runtime_* and stats_* tables show what runs and cannot be changed: edit mysql_servers, "
    "mysql_users, mysql_query_rules, mysql_replication_hostgroups or global_variables, then "
    "LOAD MYSQL ... TO RUNTIME"
)


def authorize(
    action: int, arg1: str | None, _arg2: str | None, db: str | None, _t: str | None
) -> int:
    if action in _ALLOWED:
        return sqlite3.SQLITE_OK
    if action in _WRITES and db in ("main", "disk") and (arg1 or "") in TABLE_NAMES:
        return sqlite3.SQLITE_OK
    if action in _WRITES and arg1 == "sqlite_sequence":
        return sqlite3.SQLITE_OK  # rule_id AUTOINCREMENT
    return sqlite3.SQLITE_DENY


def names_layer_table(sql: str) -> bool:
    return _NAMES_LAYER.search(sql) is not None


def _module(text: str) -> str:
    return " ".join(text.lower().split())


@dataclass(frozen=True)
class Start:
    """The config a start begins with, where it comes from, and whether to (re)write the disk
    database from the YAML first."""

    config: Config
    source: str
    seed_disk: bool


def plan_start(config: Config, config_path: str, initial: bool) -> Start:
    """ProxySQL's rule: the YAML seeds the disk database the first time (or with --initial);
    afterwards the disk database wins. Nothing is written here (`--check` uses it too)."""
    if config.admin.database is None:
        return Start(config, f"configuration from {config_path} (admin.database is not set)", False)
    path = (Path(config_path).parent / config.admin.database).resolve()  # next to the YAML
    config = config.model_copy(
        update={"admin": config.admin.model_copy(update={"database": str(path)})}
    )
    if initial or not path.exists():
        why = "--initial" if initial else "first start"
        return Start(
            config,
            f"configuration from {config_path} ({why}: it seeds the disk database {path})",
            True,
        )
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            found = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            missing = [t for t in TABLE_NAMES if t not in found]
            if missing:
                raise TableError(f"no table {missing[0]}")
            started = configdb.read_config(db, "main", config, MODULES)
        finally:
            db.close()
    except (sqlite3.Error, TableError) as exc:
        raise ConfigError(
            f"{path}: the disk database (admin.database) cannot be read: {exc}. Start once "
            f"with --initial to rebuild it from {config_path} (the old file is kept as "
            f"{path.name}.bak)"
        ) from None
    return Start(
        started,
        f"configuration from the disk database {path} (it wins over {config_path}; "
        f"--initial rebuilds it from the YAML)",
        False,
    )


def seed_disk(config: Config) -> None:
    """Write the disk database from config (a previous file is kept as <name>.bak)."""
    assert config.admin.database is not None
    path = Path(config.admin.database)
    try:
        if path.exists():
            path.replace(path.with_name(path.name + ".bak"))
        db = sqlite3.connect(path)
        try:
            with db:
                configdb.create_tables(db, "main")
                configdb.write_config(db, "main", config, TABLE_NAMES)
        finally:
            db.close()
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(
            f"{path}: cannot write the disk database (admin.database): {exc}"
        ) from None


class Layers:
    """Owns the admin's SQLite database: the memory layer (schema main) and the disk database
    (attached as disk). Every statement on it runs on its own thread, one at a time."""

    def __init__(self, proxy: ProxyView) -> None:
        self.proxy = proxy
        self.db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        configdb.create_tables(self.db, "main")
        configdb.write_config(self.db, "main", proxy.config, TABLE_NAMES)
        self.disk = proxy.config.admin.database
        if self.disk is not None:
            self.db.execute("ATTACH DATABASE ? AS disk", (self.disk,))
            configdb.create_tables(self.db, "disk")
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pyproxy-admin-db")
        self._runtime_lock = asyncio.Lock()  # one LOAD ... TO RUNTIME at a time

    async def run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    def close(self) -> None:
        self._thread.submit(self.db.close)  # after a running statement, on its thread
        self._thread.shutdown(wait=False, cancel_futures=False)

    # -- statements ------------------------------------------------------------------------------
    async def command(self, sql: str) -> str | None:
        """LOAD/SAVE/SET: what was done, once done; None when sql is none of them. Raises
        ValueError (one line) when it can't be done; then nothing changed."""
        if m := _MOVE.match(sql):
            verb, module, direction, layer = (g.lower() for g in m.groups())
            move = _MOVES.get((verb, direction, layer))
            if move is None:
                raise ValueError(f"{sql.strip().rstrip(';')}: not a ProxySQL LOAD/SAVE direction")
            return await self._move(_module(module), *move)
        if _SETS_VARIABLE.match(sql) and not _SET.match(sql):
            raise ValueError("expected SET <variable>='<value>'")
        if m := _SET.match(sql):
            name = m.group(1).lower()
            value = next(v for v in m.groups()[1:] if v is not None)
            quote = "'" if m.group(2) is not None else '"'
            await self.run(lambda: self._set_variable(name, value.replace(quote * 2, quote)))
            return ""
        return None

    def show_variables(self, like: str | None) -> tuple[list[str], list[tuple[object, ...]]]:
        sql = "SELECT variable_name, variable_value FROM main.global_variables"
        args: tuple[str, ...] = ()
        if like is not None:
            sql += " WHERE variable_name LIKE ?"
            args = (like,)
        return ["Variable_name", "Value"], self.db.execute(sql + " ORDER BY 1", args).fetchall()

    @staticmethod
    def match_show_variables(sql: str) -> tuple[bool, str | None]:
        m = _SHOW_VARIABLES.match(sql)
        if m is None:
            return False, None
        return True, None if m.group(1) is None else m.group(1).replace("''", "'")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing (the connection is in autocommit mode, so that a user's statement
        is never left in an open transaction)."""
        self.db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _set_variable(self, name: str, value: str) -> None:
        if name.startswith("admin-"):
            raise ValueError(
                f"{name}: the admin's settings come from the YAML (admin:, listeners:) and the "
                f"environment, not from global_variables"
            )
        if name not in configdb.VARIABLE_BY_NAME:
            raise ValueError(f"unknown variable {name!r} (SHOW VARIABLES lists them)")
        with self.transaction():
            for alias in configdb.aliases(name):
                self.db.execute("REPLACE INTO main.global_variables VALUES (?, ?)", (alias, value))

    async def _move(self, module: str, source: str, target: str) -> str:
        tables = MODULES[module]
        if "disk" in (source, target) and self.disk is None:
            raise ValueError("no disk database: set admin.database (e.g. proxysql.db) in the YAML")
        if target == "runtime":
            async with self._runtime_lock:
                base = self.proxy.config
                new = await self.run(lambda: self._read(base, module))
                await self.proxy.apply_config(new)
            log.warning("LOAD MYSQL %s TO RUNTIME", module.upper())
            if later := configdb.restart_only_changes(base, new):
                note = f"{', '.join(later)} take effect at the next start"
                log.warning("%s", note)
                return f"{module} loaded to runtime; {note}"
            return f"{module} loaded to runtime"
        if source == "runtime":
            running = self.proxy.config
            await self.run(lambda: self._write("main", running, tables))
        elif source == "config":
            path = self.proxy.config_path
            if path is None:
                raise ValueError("no config file (the proxy was started without one)")
            from_file = await self.run(lambda: load_config(path))
            await self.run(lambda: self._write("main", from_file, tables))
        else:
            await self.run(lambda: self._copy(source, target, tables))
        return f"{module}: {source} -> {target}"

    def _read(self, base: Config, module: str) -> Config:
        try:
            return configdb.read_config(self.db, "main", base, [module])
        except TableError as exc:
            raise ValueError(
                f"LOAD MYSQL {module.upper()} TO RUNTIME refused, runtime unchanged: {exc}"
            ) from None

    def _write(self, schema: str, config: Config, tables: Iterable[str]) -> None:
        with self.transaction():
            configdb.write_config(self.db, schema, config, tables)

    def _copy(self, source: str, target: str, tables: Iterable[str]) -> None:
        names = {"memory": "main", "disk": "disk"}
        src, dst = names[source], names[target]
        with self.transaction():  # all the module's tables or none
            for table in tables:
                self.db.execute(f"DELETE FROM {dst}.{table}")
                self.db.execute(f"INSERT INTO {dst}.{table} SELECT * FROM {src}.{table}")

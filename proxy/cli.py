"""Command-line entry point: argument parsing and wiring only."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from importlib.metadata import version
from typing import Any

from proxy.admin.layers import plan_start, seed_disk
from proxy.compiled import describe
from proxy.config import Config, ConfigError, load_config
from proxy.lab.lab import Lab
from proxy.lab.servers import LabError
from proxy.tools.cli import TOOL_COMMANDS, add_tool_commands, run_tool

DEFAULT_LAB_DIR = os.environ.get("PYPROXY_LAB_DIR", "lab")


def _lab_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lab = sub.add_parser("lab", help="a local replicated MariaDB/MySQL topology")
    lab_sub = lab.add_subparsers(dest="lab_cmd", required=True)
    for name, text in [
        ("up", "start (or restart) the lab and set up replication"),
        ("down", "stop every server process the lab started"),
        ("status", "show each node's role, read_only, replication threads, lag and GTID"),
        ("destroy", "stop the lab and remove its data"),
        ("kill", "SIGKILL one node (for failure drills)"),
        ("run", "start the lab and pyproxy in front of it; Ctrl-C stops both"),
    ]:
        p = lab_sub.add_parser(name, help=text, description=text)
        p.add_argument("--dir", default=DEFAULT_LAB_DIR, help="lab directory (default: ./lab)")
        if name in ("up", "run"):
            p.add_argument("--masters", type=int, default=2)
            p.add_argument("--replicas", type=int, default=1)
            p.add_argument("--semisync", action="store_true", help="semi-sync between masters")
        if name == "kill":
            p.add_argument("node", help="node name, e.g. master1")


def _run_lab(args: argparse.Namespace) -> int:
    lab = Lab(args.dir)
    if args.lab_cmd == "up":
        state = lab.up(masters=args.masters, replicas=args.replicas, semisync=args.semisync)
        print(f"lab is up in {lab.root}: {state.masters} masters, {state.replicas} replicas")
        print("\n".join(lab.status_lines()))
        print(f"proxy config: {lab.config_path}")
    elif args.lab_cmd == "status":
        print("\n".join(lab.status_lines()))
    elif args.lab_cmd == "down":
        stopped = lab.down()
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    elif args.lab_cmd == "destroy":
        stopped = lab.destroy()
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}; removed {lab.root}")
    elif args.lab_cmd == "run":
        lab.up(masters=args.masters, replicas=args.replicas, semisync=args.semisync)
        config = load_config(lab.write_proxy_config())
        print("\n".join(lab.status_lines()))
        mysql, admin, http = config.listeners.mysql, config.listeners.admin, config.listeners.http
        app = config.users[0]
        print(
            f"\npyproxy is starting on {mysql.host}:{mysql.port}. Connect with:\n"
            f"  mariadb -h {mysql.host} -P {mysql.port} -u {app.username} -p{app.password} "
            f"{app.default_schema or ''}\n"
            f"Admin (ProxySQL-style SQL):\n"
            f"  mariadb -h {admin.host} -P {admin.port} -u {config.admin.username} "
            f"-p{config.admin.password}\n"
            f"Metrics: http://{http.host}:{http.port}/metrics\n"
            f"Ctrl-C stops the proxy and the lab.\n",
            flush=True,
        )
        try:
            return run_proxy(config, str(lab.config_path))
        finally:
            stopped = lab.down()
            print(f"stopped pyproxy and the lab ({', '.join(stopped)})")
    elif args.lab_cmd == "kill":
        pid = lab.kill(args.node)
        print(f"{args.node}: " + (f"killed pid {pid}" if pid else "was not running"))
    return 0


def run_proxy(config: Config, config_path: str | None = None) -> int:
    """Run the proxy in the foreground until SIGINT/SIGTERM; SIGHUP reloads the config."""
    setup_logging(config)
    try:
        import uvloop

        runner: Callable[[Coroutine[Any, Any, None]], None] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency; stdlib asyncio still works
        runner = asyncio.run
    runner(_serve(config, config_path))
    return 0


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def __init__(self, process: str = "") -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.process:
            out["process"] = self.process
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(config: Config, process: str = "") -> None:
    """process: which process logs (a worker's name), shown in every line."""
    handler = logging.StreamHandler()
    if config.log_format == "json":
        handler.setFormatter(JsonFormatter(process))
    else:
        tag = f"[{process}] " if process else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {tag}%(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log_level.upper())


async def _serve(config: Config, config_path: str | None) -> None:
    from proxy.app import Proxy

    server = Proxy(config, config_path=config_path, workers=config.worker_count)
    # Before start: a SIGTERM while the workers start up stops them all too.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # A SIGHUP while starting (its default action ends the process) is a reload once started.
    reloads: set[asyncio.Task[tuple[bool, str]]] = set()
    started = False
    hup_pending = False

    def on_hup() -> None:
        nonlocal hup_pending
        if not started:
            hup_pending = True
            return
        task = loop.create_task(server.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    try:
        await server.start()
    except ConfigError:  # a listener could not bind: stop what did start, then say which
        await server.stop(0.0)
        raise
    log = logging.getLogger("pyproxy")
    log.info(
        "pyproxy listening on %s:%d (admin %s:%d, metrics http://%s:%d/metrics)",
        config.listeners.mysql.host,
        server.port,
        config.listeners.admin.host,
        server.admin.port,
        config.listeners.http.host,
        server.http.port,
    )
    started = True
    if hup_pending:
        on_hup()
    await stop.wait()
    log.info("pyproxy shutting down")
    await server.stop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyproxy", description="MySQL/MariaDB read/write-splitting proxy"
    )
    parser.add_argument("--config", help="path to pyproxy.yaml")
    parser.add_argument(
        "--check",
        action="store_true",
        help="validate the config (and the disk database), say which one is in force, and exit",
    )
    parser.add_argument(
        "--initial",
        action="store_true",
        help="rebuild the disk database (admin.database) from the YAML, as ProxySQL's --initial",
    )
    parser.add_argument(
        "--version",
        action="store_true",
        help="print the version and whether the hot path runs compiled (mypyc) or interpreted",
    )
    sub = parser.add_subparsers(dest="command")
    _lab_parser(sub)
    bs = sub.add_parser(
        "bootstrap",
        help="set up accounts, replication, read_only and the demo schema on running servers",
        description="Configure the topology in the config on already running servers (what "
        "docker-compose runs once the MySQL containers are up). Idempotent.",
    )
    bs.add_argument("--config", dest="bs_config", required=True, help="path to pyproxy.yaml")
    bs.add_argument("--root-user", default=os.environ.get("MYSQL_ROOT_USER", "root"))
    bs.add_argument("--root-password", default=os.environ.get("MYSQL_ROOT_PASSWORD", ""))
    bs.add_argument(
        "--replication-password", default=os.environ.get("REPLICATION_PASSWORD", "repl-pass")
    )
    bs.add_argument("--semisync", action="store_true", help="semi-sync between the masters")
    bs.add_argument(
        "--wait",
        type=float,
        default=120.0,
        help="seconds to wait for the servers to accept connections",
    )
    sw = sub.add_parser(
        "switchover",
        help="planned writer change on the servers (running proxies follow read_only)",
    )
    sw.add_argument("--config", dest="sw_config", required=True, help="path to pyproxy.yaml")
    sw.add_argument("--to", required=True, help="the master that becomes the writer")
    add_tool_commands(sub)
    return parser


def _bootstrap(config: Config, args: argparse.Namespace) -> int:
    """Run the topology bootstrap against the servers of a config (e.g. in docker-compose)."""
    import time

    from proxy.lab.bootstrap import (
        Account,
        Accounts,
        BootstrapError,
        Node,
        Topology,
        bootstrap,
        connect,
    )

    if config.backend_admin is None:
        raise ConfigError("backend_admin: required to bootstrap (it flips read_only)")
    app = config.users[0]
    accounts = Accounts(
        app=Account(app.username, app.password),
        monitor=Account(config.monitor.username, config.monitor.password),
        admin=Account(config.backend_admin.username, config.backend_admin.password),
        replication=Account("repl", args.replication_password),
    )
    nodes = [
        Node(
            s.name,
            s.role,
            s.host,
            s.port,
            root_user=args.root_user,
            root_password=args.root_password,
        )
        for s in config.masters + config.replicas
    ]
    deadline = time.monotonic() + args.wait
    for node in nodes:
        while True:
            try:
                connect(node, timeout=3).close()
                break
            except BootstrapError as exc:
                if time.monotonic() > deadline:
                    raise ConfigError(f"{node.name}: not reachable: {exc}") from None
                time.sleep(1)
    try:
        bootstrap(Topology(nodes, accounts, semisync=args.semisync))
    except BootstrapError as exc:
        raise ConfigError(f"bootstrap failed: {exc}") from None
    print(f"bootstrapped {len(nodes)} servers: " + ", ".join(f"{n.name} ({n.role})" for n in nodes))
    return 0


def _switchover(config: Config, target: str) -> int:
    """Swap read_only on the servers; every pyproxy in front of them follows within a check."""
    from proxy.cluster import Cluster
    from proxy.health.monitor import Monitor
    from proxy.topology import Topology as ClusterTopology

    async def run() -> str:
        monitor = Monitor(lambda: config, ClusterTopology(Cluster.from_config(config)))
        await monitor.check_all()
        try:
            writable = monitor.writable_masters()
            if len(writable) != 1:
                raise ConfigError(
                    f"expected exactly one writable master, found {len(writable)} "
                    f"({', '.join(writable) or 'none'}): not switching over"
                )
            old = writable[0]
            if old != target:
                try:
                    await monitor.swap_writer(old, target)
                except RuntimeError as exc:
                    raise ConfigError(f"switchover failed: {exc}") from None
            return old
        finally:
            await monitor.stop()

    if target not in {m.name for m in config.masters}:
        raise ConfigError(f"--to: {target!r} is not a master in the config")
    old = asyncio.run(run())
    print(f"writer: {old} -> {target}" if old != target else f"{target} is already the writer")
    return 0


def entry() -> None:
    """The `pyproxy` console script."""
    sys.exit(main(quiet_pipe=True))


def _only_prints(args: argparse.Namespace) -> bool:
    """Commands that just print (no proxy, no client sessions in this process)."""
    return bool(args.command == "lab" and args.lab_cmd != "run")


def main(argv: Sequence[str] | None = None, quiet_pipe: bool = False) -> int:
    args = build_parser().parse_args(argv)
    if quiet_pipe and _only_prints(args):
        # `pyproxy lab status | head` should end quietly, like any Unix tool. Only there: a
        # process serving clients must keep SIGPIPE ignored, or one client closing its socket
        # mid-result would kill it. (Not for tests calling main() in-process either.)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.version:
        print(f"pyproxy {version('pyproxy')}, Python {platform.python_version()}, {describe()}")
        return 0
    if args.command in TOOL_COMMANDS:
        return run_tool(args)
    try:
        if args.command == "lab":
            return _run_lab(args)
        if args.command == "bootstrap":
            return _bootstrap(load_config(args.bs_config), args)
        if args.command == "switchover":
            return _switchover(load_config(args.sw_config), args.to)
        if not args.config:
            build_parser().print_usage(sys.stderr)
            print("pyproxy: error: --config FILE is required to run the proxy", file=sys.stderr)
            return 2
        if not args.check:
            # A SIGHUP before the proxy handles it (a reload then) must not end the process.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
        start = plan_start(load_config(args.config), args.config, args.initial)
        config = start.config
        if args.check:
            print(
                f"{args.config}: OK ({len(config.servers)} servers, {len(config.users)} users); "
                f"{start.source}"
            )
            return 0
        if start.seed_disk:
            seed_disk(config)
        logging.getLogger("pyproxy").info("%s", start.source)
        return run_proxy(config, args.config)
    except (LabError, ConfigError) as exc:
        print(f"pyproxy: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    entry()

"""The tool subcommands (load, verify, drill, crud, demo): arguments and dispatch."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pymysql

from proxy.config import Config, ConfigError, load_config
from proxy.lab.servers import LabError
from proxy.tools import crud, demo, drill, load, verify
from proxy.tools.nodes import ToolError, describe, proxy_endpoint, server_endpoints
from proxy.tools.progress import Progress

TOOL_COMMANDS = frozenset({"load", "verify", "drill", "crud", "demo"})


def _positive(kind: Callable[[str], Any], minimum: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum:g}")
        return value

    return parse


def _mix(text: str) -> tuple[int, int]:
    try:
        return load.parse_mix(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", dest="tool_config", required=True, metavar="FILE", help="pyproxy.yaml"
    )


def add_tool_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register load, verify, drill, crud and demo on the `pyproxy` parser."""
    text = "reads and writes through pyproxy, with a per-node replication delay check"
    p = sub.add_parser("load", help=text, description=text)
    _config_arg(p)
    p.add_argument(
        "--rate",
        type=_positive(float, 0),
        default=load.LoadOptions.rate,
        help="operations per second in total (0: unpaced; default %(default)g)",
    )
    p.add_argument(
        "--duration",
        type=_positive(float, 0),
        default=0.0,
        metavar="S",
        help="seconds to run (default: until Ctrl-C)",
    )
    p.add_argument(
        "--mix",
        type=_mix,
        default=(80, 20),
        metavar="READ:WRITE",
        help="share of reads and writes (default 80:20)",
    )
    p.add_argument(
        "--table",
        default=load.DEFAULT_TABLE,
        metavar="T",
        help="[schema.]table to write (created if missing; default %(default)s "
        "in the user's default schema)",
    )
    p.add_argument("--threads", type=_positive(int, 1), default=load.LoadOptions.threads)
    p.add_argument(
        "--settle",
        type=_positive(float, 0),
        default=load.LoadOptions.settle,
        metavar="S",
        help="after the run, wait this long for rows still unseen",
    )

    text = "compare every node with the writer: tables, row counts, checksums, GTID positions"
    p = sub.add_parser("verify", help=text, description=text)
    _config_arg(p)
    p.add_argument(
        "--schema",
        action="append",
        default=[],
        metavar="S",
        help="only this schema (repeatable; default: every non-system schema)",
    )
    p.add_argument(
        "--chunk-rows",
        type=_positive(int, 1),
        default=verify.VerifyOptions.chunk_rows,
        metavar="N",
        help="tables larger than this are checksummed in key ranges",
    )
    p.add_argument(
        "--wait",
        type=_positive(float, 0),
        default=verify.VerifyOptions.wait,
        metavar="S",
        help="how long to wait for replicas to catch up",
    )

    text = "run a failure scenario on a lab under load and print its timeline"
    p = sub.add_parser("drill", help=text, description=text)
    p.add_argument("scenario", choices=drill.DRILLS)
    _config_arg(p)
    p.add_argument(
        "--rate",
        type=_positive(float, 1),
        default=drill.DrillOptions.rate,
        help="load during the drill, operations per second",
    )
    p.add_argument(
        "--before",
        type=_positive(float, 0),
        default=drill.DrillOptions.before,
        metavar="S",
        help="seconds of load before the fault",
    )
    p.add_argument(
        "--after",
        type=_positive(float, 0),
        default=drill.DrillOptions.after,
        metavar="S",
        help="seconds of load after recovery",
    )
    p.add_argument("--verbose", action="store_true", help="show the proxy's own log")

    text = "run the CRUD test script (crud.sql) on demo_db through pyproxy"
    p = sub.add_parser("crud", help=text, description=text)
    p.add_argument("--config", dest="tool_config", metavar="FILE", help="pyproxy.yaml")
    p.add_argument(
        "--print",
        dest="print_sql",
        action="store_true",
        help="print the script (for mysql/mariadb < file) and exit",
    )
    p.add_argument(
        "--no-cli",
        action="store_true",
        help="run it with PyMySQL even when the mysql/mariadb CLI is installed",
    )

    text = "a lab, CRUD, load, verify and a failover drill in about a minute, then a report"
    p = sub.add_parser("demo", help=text, description=text)
    p.add_argument(
        "--dir",
        metavar="DIR",
        help="lab directory (reused if it holds a lab; default: a temporary one)",
    )
    p.add_argument("--keep", action="store_true", help="leave the lab running at the end")
    p.add_argument(
        "--load-seconds",
        type=_positive(float, 1),
        default=demo.DemoOptions.load_seconds,
        metavar="S",
    )
    p.add_argument("--verbose", action="store_true", help="show the proxy's own log")


def run_tool(args: argparse.Namespace) -> int:
    """Run a tool command; a failure to start is one line on stderr and exit code 1."""
    try:
        with _quiet_proxy_log(not getattr(args, "verbose", True)):
            return _dispatch(args)
    except (ConfigError, LabError, ToolError) as exc:
        _fail(args.command, str(exc))
    except pymysql.MySQLError as exc:
        _fail(args.command, describe(exc))
    except KeyboardInterrupt:
        return 130
    return 1


def _fail(command: str, message: str) -> None:
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    print(f"pyproxy {command}: {first}", file=sys.stderr)


def _dispatch(args: argparse.Namespace) -> int:
    progress = Progress(sys.stderr)
    if args.command == "demo":
        return demo.run_demo(
            demo.DemoOptions(dir=args.dir, keep=args.keep, load_seconds=args.load_seconds),
            progress,
        )
    if args.command == "crud" and args.print_sql:
        print(crud.script_text(), end="")
        return 0
    if not args.tool_config:
        raise ToolError("--config FILE is required")
    config = _config(args.tool_config)
    if args.command == "load":
        reads, writes = args.mix
        options = load.LoadOptions(
            rate=args.rate,
            duration=args.duration,
            reads=reads,
            writes=writes,
            table=args.table,
            threads=args.threads,
            settle=args.settle,
        )
        return load.run(proxy_endpoint(config), server_endpoints(config), options, progress)
    if args.command == "verify":
        options_v = verify.VerifyOptions(
            schemas=tuple(args.schema), chunk_rows=args.chunk_rows, wait=args.wait
        )
        report = verify.verify(server_endpoints(config), options_v)
        print("\n".join(report.lines()), flush=True)
        return 0 if report.ok else 1
    if args.command == "drill":
        return _drill(args, config, progress)
    if args.command == "crud":
        result = crud.run_crud(proxy_endpoint(config), use_cli=not args.no_cli)
        print("\n".join(result.lines()))
        print("result: CRUD " + result.verdict(), flush=True)
        return 0 if result.ok else 1
    raise ToolError(f"unknown tool command {args.command}")


def _config(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        if path in str(exc):
            raise
        raise ConfigError(f"{path}: {exc}") from None


def _drill(args: argparse.Namespace, config: Config, progress: Progress) -> int:
    lab = drill.find_lab(args.tool_config, config)
    options = drill.DrillOptions(rate=args.rate, before=args.before, after=args.after)
    result = drill.run_drill(args.scenario, lab, config, options, progress)
    print("\n".join(result.lines()), flush=True)
    return 0 if result.ok else 1


@contextmanager
def _quiet_proxy_log(quiet: bool) -> Iterator[None]:
    """Drills run a proxy in-process: its warnings (the failover it handles) would bury the
    timeline, so they show only with --verbose."""
    logger = logging.getLogger("proxy")
    previous = logger.level
    if quiet:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)

"""Which hot modules run compiled by mypyc, and the switch back to pure Python."""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

# Compiled by setup.py when mypy and a C compiler are there; the .py files stay the source.
HOT_MODULES: tuple[str, ...] = (
    "proxy.protocol.packets",
    "proxy.protocol.response",
    "proxy.routing.lru",
    "proxy.routing.tokens",
    "proxy.routing.sqllexer",
    "proxy.routing.digest",
    "proxy.routing.classifier",
    "proxy.routing.router",
    "proxy.routing.stats",
    "proxy.backend.sync",
    "proxy.backend.connection",
    "proxy.frontend.prepared",
    "proxy.frontend.commands",
    "proxy.frontend.client",
    "proxy.frontend.session",
    "proxy.frontend.listener",
    "proxy.metrics",
    "proxy.cluster",
    "proxy.view",
)

PURE_ENV = "PYPROXY_PURE"  # =1: run the .py files even where compiled modules exist

_ROOT = Path(__file__).resolve().parent.parent


def _compiled_file(root: Path, module: str) -> Path | None:
    base = root / module.replace(".", "/")
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = base.with_name(base.name + suffix)
        if path.exists():
            return path
    return None


def stale_modules(root: Path = _ROOT) -> list[str]:
    """Hot modules built before the last edit of any .py file of the package."""
    if not (root / "setup.py").is_file():
        return []  # an installed wheel: its files carry install times, and nobody edits them
    # Any file, not only the module's own: mypyc copies other modules' Final constants and
    # class layouts into each module it builds, so an edit to constants.py dates them all.
    newest = 0.0
    for path in (root / "proxy").rglob("*.py"):
        with contextlib.suppress(OSError):  # a broken symlink (an editor's lock file)
            newest = max(newest, path.stat().st_mtime)
    stale = []
    for module in HOT_MODULES:
        built = _compiled_file(root, module)
        if built is not None and newest > built.stat().st_mtime:
            stale.append(module)
    return stale


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Loads the hot modules from their .py files, never from a compiled module beside them."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in HOT_MODULES or path is None:
            return None
        loader = (importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES)
        for entry in path:
            spec = importlib.machinery.FileFinder(entry, loader).find_spec(fullname, target)
            if spec is not None:
                return spec
        return None


def _choose() -> str | None:
    """Why the hot modules run interpreted even if compiled ones exist (None: they may not)."""
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return f"{PURE_ENV}=1"
    stale = stale_modules()
    if stale:
        warnings.warn(
            f"compiled modules older than the package's source ({', '.join(stale)}): running pure "
            "Python; `make venv` rebuilds them",
            RuntimeWarning,
            stacklevel=2,
        )
        return "compiled modules are stale"
    return None


FORCED_PURE = _choose()
if FORCED_PURE is not None:
    sys.meta_path.insert(0, _SourceFinder())


def is_compiled(module: ModuleType) -> bool:
    """Whether this module was loaded from a compiled extension module."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return str(getattr(module, "__file__", "")).endswith(suffixes)


def compiled_modules() -> list[str]:
    """The hot modules that are running compiled in this process."""
    return [name for name in HOT_MODULES if is_compiled(importlib.import_module(name))]


def describe() -> str:
    """One line for `pyproxy --version`: compiled (which modules) or interpreted (why)."""
    done = compiled_modules()
    if done:
        short = ", ".join(name.removeprefix("proxy.") for name in done)
        rest = len(HOT_MODULES) - len(done)
        return f"compiled with mypyc ({short})" + (f"; {rest} interpreted" if rest else "")
    return f"interpreted ({FORCED_PURE or 'no compiled modules built'})"

"""proxy.compiled: which compiled modules are stale."""

from __future__ import annotations

import importlib.machinery
import os
from pathlib import Path

from proxy.compiled import HOT_MODULES, stale_modules

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def _tree(root: Path, built_at: float, edited: dict[str, float]) -> None:
    """A source checkout: every hot module's .py and .so built at built_at, then edits."""
    (root / "setup.py").write_text("")
    for module in HOT_MODULES:
        base = root / module.replace(".", "/")
        base.parent.mkdir(parents=True, exist_ok=True)
        for path in (base.with_suffix(".py"), base.with_name(base.name + SUFFIX)):
            path.write_text("")
            os.utime(path, (built_at, built_at))
    for relative, when in edited.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        os.utime(path, (when, when))


def test_fresh_build_is_not_stale(tmp_path: Path) -> None:
    _tree(tmp_path, 1000.0, {"proxy/protocol/constants.py": 900.0})
    assert stale_modules(tmp_path) == []


def test_an_edited_hot_module_dates_every_compiled_module(tmp_path: Path) -> None:
    _tree(tmp_path, 1000.0, {"proxy/routing/router.py": 1001.0})
    assert stale_modules(tmp_path) == list(HOT_MODULES)


def test_an_edit_to_a_module_that_is_not_compiled_dates_them_too(tmp_path: Path) -> None:
    # mypyc copied constants.py's Final values into the modules it built.
    _tree(tmp_path, 1000.0, {"proxy/protocol/constants.py": 1001.0})
    assert stale_modules(tmp_path) == list(HOT_MODULES)


def test_without_compiled_modules_nothing_is_stale(tmp_path: Path) -> None:
    (tmp_path / "setup.py").write_text("")
    (tmp_path / "proxy").mkdir()
    (tmp_path / "proxy" / "config.py").write_text("")
    assert stale_modules(tmp_path) == []


def test_an_installed_wheel_is_never_stale(tmp_path: Path) -> None:
    # pip writes a wheel's files with their install times, .so files before proxy/tools/.
    _tree(tmp_path, 1000.0, {"proxy/tools/cli.py": 1001.0})
    (tmp_path / "setup.py").unlink()
    assert stale_modules(tmp_path) == []


def test_a_broken_symlink_is_ignored(tmp_path: Path) -> None:
    _tree(tmp_path, 1000.0, {})
    (tmp_path / "proxy" / "frontend" / ".#session.py").symlink_to("user@host.1234")
    assert stale_modules(tmp_path) == []

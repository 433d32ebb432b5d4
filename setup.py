"""Build hook: compiles the hot modules with mypyc when mypy and a C compiler are there."""

from __future__ import annotations

import ast
import os
import shlex
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any

from setuptools import setup

HERE = Path(__file__).resolve().parent


def _hot_modules() -> list[str]:
    """HOT_MODULES of proxy/compiled.py, read without importing the package."""
    tree = ast.parse((HERE / "proxy" / "compiled.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "HOT_MODULES":
            return list(ast.literal_eval(node.value))
    raise RuntimeError("proxy/compiled.py has no HOT_MODULES")


# setuptools runs this file for metadata too; only these commands build extension modules.
BUILDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "install", "develop"}


def _ext_modules() -> list[Any]:
    if not BUILDS & set(sys.argv):
        return []
    if os.environ.get("PYPROXY_PURE", "") not in ("", "0"):
        print("pyproxy: PYPROXY_PURE is set, pure Python build", file=sys.stderr)
        return []
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    if not cc or shutil.which(cc[0]) is None:
        print("pyproxy: no C compiler, pure Python build", file=sys.stderr)
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("pyproxy: mypy is not installed here, pure Python build", file=sys.stderr)
        return []
    paths = [m.replace(".", "/") + ".py" for m in _hot_modules()]
    return list(mypycify(paths, opt_level="3", debug_level="0"))


setup(ext_modules=_ext_modules())

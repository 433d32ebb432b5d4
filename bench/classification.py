"""Runs the existing classifier microbenchmark (bench/classify.py) and collects its figures."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.settings import REPO

SCRIPT = REPO / "bench" / "classify.py"


def proxy_tokenizer() -> str:
    """The tokenizer pyproxy's listener uses (Classifier's default)."""
    from proxy.routing.classifier import Classifier

    return str(Classifier().tokenizer)


def run_classify() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pyproxy-classify-") as tmp:
        path = Path(tmp) / "classify.json"
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), "--json", str(path)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=REPO,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"bench/classify.py failed:\n{proc.stdout}\n{proc.stderr}")
        figures: list[dict[str, Any]] = json.loads(path.read_text())
    default = proxy_tokenizer()
    headline = next((f for f in figures if f["tokenizer"] == default), figures[0])
    return {"proxy_tokenizer": default, "figures": figures, "headline": headline}

"""Another commit's symnas beside this checkout's, for benchmarks that time both in one run.

A commit's code is taken with ``git archive`` into a folder (nothing is installed) and a script
runs in a fresh interpreter that imports that code first::

    package = baseline_tree("bcd7610", pathlib.Path(tmp))
    rows = run_fresh("benchmarks/loop_overhead.py", ["--measure", "symnas, in memory"], package)
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from typing import List, Optional

ROOT = pathlib.Path(__file__).resolve().parents[1]


def baseline_tree(commit: str, folder: pathlib.Path) -> pathlib.Path:
    """``commit``'s symnas laid out under ``folder`` as an importable package (algorithms/ and
    spaces/ inside it, as the editable install maps them); returns the folder to put on PYTHONPATH."""
    source = folder / f"src-{commit}"
    source.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    package = folder / f"pkg-{commit}"
    shutil.copytree(source / "symnas", package / "symnas")
    for sub in ("algorithms", "spaces"):
        shutil.copytree(source / sub, package / "symnas" / sub)
    return package


def run_fresh(script: str, args: List[str], pythonpath: Optional[pathlib.Path] = None) -> List[dict]:
    """Runs ``script`` with ``args`` in a fresh interpreter (importing ``pythonpath``'s symnas when
    given, else this checkout's); returns the JSON objects it printed, one a line."""
    env = dict(os.environ)
    command = [sys.executable]
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
        command.append("-P")   # the other commit's package first, not this checkout's
    command += [os.path.abspath(script), *args]
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]

"""The package outside this repository: build the wheel, install it with the `local` extra into a fresh
venv, and use it from a folder that is not this checkout (`orch --help`, `orch init`, `orch run`).

Slow (about a minute: the dependencies come from PyPI, llama-cpp-python's wheel from pip's cache, which
`make test` fills when it installs the `local` extra); it runs in `make test`. ORCH_SKIP_WHEEL=1 skips it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from loopback import Loopback
from wire import openai_stream, openai_usage

from orchestrator import __version__
from orchestrator._version import DIST_NAME

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("ORCH_SKIP_WHEEL") == "1", reason="ORCH_SKIP_WHEEL=1"),
]
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(*cmd: str | Path, cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**clean, **env},
    )
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_the_wheel_installs_and_runs_outside_the_checkout(tmp_path: Path, loopback: Loopback) -> None:
    t0 = time.perf_counter()
    # the sources a release ships (what an sdist holds), so nothing of the work tree's build/ leaks in
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "orchestrator", src / "orchestrator", ignore=shutil.ignore_patterns("__pycache__"))
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--quiet",
        "-w",
        tmp_path / "dist",
        src,
        cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    assert wheel.name == f"{DIST_NAME.replace('-', '_')}-{__version__}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    assert {"orchestrator/py.typed", "orchestrator/data/prices.json", "orchestrator/scaffold.py"} <= set(
        names
    )
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    )
    assert b"[orchestrator.providers]" in entry_points and b"local = " in entry_points
    built = time.perf_counter()

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    _run(
        venv / "bin" / "python",
        "-m",
        "pip",
        "install",
        "--quiet",
        f"{wheel}[local]",
        cwd=tmp_path,
        timeout=600,
    )
    installed = time.perf_counter()

    work = tmp_path / "elsewhere"  # not the checkout: `import orchestrator` must find the installed copy
    work.mkdir()
    code = "import orchestrator, llama_cpp; print(orchestrator.__version__, orchestrator.__file__)"
    version, where = _run(venv / "bin" / "python", "-c", code, cwd=work).stdout.split()
    assert version == __version__ and Path(where).is_relative_to(venv)
    assert "init" in _run(venv / "bin" / "orch", "--help", cwd=work).stdout
    made = _run(venv / "bin" / "orch", "init", "agents", cwd=work)
    assert "Next:" in made.stdout
    project = work / "agents"

    # the scaffold type-checks against the installed (typed) package
    _run(
        BIN / "mypy",
        "--strict",
        "--python-executable",
        venv / "bin" / "python",
        "--cache-dir",
        tmp_path / "mypy",
        "graphs",
        "tools",
        "workers",
        cwd=project,
    )

    # and runs there, with its slots bound to a loopback server (the installed price table prices it)
    manifest = project / "pyproject.toml"
    manifest.write_text(
        re.sub(
            r'model = "local:qwen2\.5-[0-9.]+b"',
            f'model = "openai:gpt-4o-mini", base_url = "{loopback.url}/v1"',
            manifest.read_text(),
        )
    )
    loopback.push(openai_stream(["The train was late."], openai_usage(50, 6)))
    run = _run(
        venv / "bin" / "orch",
        "run",
        "Summarize: the train was late.",
        "--json",
        cwd=project,
        ORCH_TRACES=str(tmp_path / "t.db"),
        ORCH_CHECKPOINTS=str(tmp_path / "c.db"),
    )
    result = json.loads(run.stdout)
    assert result["status"] == "ok" and result["answer"] == "The train was late."
    assert result["ledger"]["cost_usd"] == pytest.approx(50 * 0.15e-6 + 6 * 0.6e-6)  # gpt-4o-mini's prices
    done = time.perf_counter()
    print(
        f"\nwheel test: build {built - t0:.1f} s, venv + install [local] {installed - built:.1f} s, "
        f"use {done - installed:.1f} s"
    )

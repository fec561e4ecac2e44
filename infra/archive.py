"""Deterministic source archives of one function: its main.py and requirements.txt, and mailbridge/."""
from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

from config import REPO_ROOT

# A fixed timestamp and mode for every entry: the same sources always give the same bytes,
# so the archive's hash (and the bucket object named after it) changes only with the code.
_EPOCH = (1980, 1, 1, 0, 0, 0)
_MODE = 0o644 << 16


def archive_files(name: str, root: Path | None = None) -> list[tuple[str, Path]]:
    """The (archive name, source path) pairs of function `name`, sorted by archive name.

    Only listed files go in: functions/<name>/main.py and requirements.txt, and the .py files
    of shared/mailbridge/ as mailbridge/… (no __pycache__, no tests), and for `manage` the
    repository's openapi.yaml as mailbridge/openapi.yaml when it exists. Raises FileNotFoundError
    if the function's main.py or requirements.txt is missing.
    """
    root = Path(root or REPO_ROOT)
    function_dir = root / "functions" / name
    files = [(f, function_dir / f) for f in ("main.py", "requirements.txt")]
    for _, path in files:
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: every function needs main.py and requirements.txt")
    library = root / "shared" / "mailbridge"
    if not (library / "__init__.py").is_file():
        raise FileNotFoundError(f"{library}/__init__.py is missing: the shared library is packaged from there")
    for path in library.rglob("*.py"):
        parts = path.relative_to(library).parts
        if any(p == "__pycache__" or p == "tests" or p.startswith(".") for p in parts[:-1]):
            continue
        if parts[-1].startswith("test_") or parts[-1] == "conftest.py":
            continue
        files.append(("mailbridge/" + "/".join(parts), path))
    # `manage` serves GET /openapi.yaml (mailbridge/api/docs.py looks inside the package first):
    # one source file, shipped as package data of that function only, so that editing the
    # document redeploys `manage` and nothing else.
    document = root / "openapi.yaml"
    if name == "manage" and document.is_file():
        files.append(("mailbridge/openapi.yaml", document))
    return sorted(files)


def build_archive(name: str, root: Path | None = None) -> tuple[bytes, str]:
    """The zip of function `name` and the sha256 hex of its bytes; deterministic for equal sources."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for arcname, path in archive_files(name, root):
            info = zipfile.ZipInfo(arcname, date_time=_EPOCH)
            info.external_attr = _MODE
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes(), compresslevel=9)
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def write_archive(name: str, out_dir: Path, root: Path | None = None) -> tuple[Path, str]:
    """Write the archive as `<out_dir>/<name>-<sha256>.zip` (kept if already there) → (path, sha256)."""
    data, digest = build_archive(name, root)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{digest}.zip"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path, digest

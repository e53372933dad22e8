"""Atomic, non-executable persistence: JSON and safetensors, written to a temp file then renamed."""

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from glt.core._errors import GltError

__all__ = [
    "atomic_write_bytes", "atomic_write_text", "malformed", "read_json", "read_result", "recover_dir",
    "replace_dir", "write_json",
]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a crash leaves the old file or none, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; results are meant to be shared
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _clean(obj.tolist())
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as JSON atomically (tensors and arrays become lists, NaN becomes null)."""
    return atomic_write_text(path, json.dumps(_clean(obj), indent=1, allow_nan=False))


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read JSON, raising GltError naming the file and the fix if it is missing or corrupt."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise GltError(f"{what} {path} does not exist: check the path") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GltError(
            f"{what} {path} is corrupted or truncated ({e}): delete it and rebuild it"
        ) from e


_MALFORMED = (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError)


@contextlib.contextmanager
def malformed(path: str | os.PathLike, what: str, fix: str = "delete it and re-run") -> Iterator[None]:
    """Turn any error raised while rebuilding a result from parsed JSON into one GltError.

    A file that parses but lacks a field, holds the wrong type or the wrong shape (hand-edited,
    from another glt version, or damaged) raises ``GltError`` naming the file, the problem and
    the fix, never a bare ``KeyError`` / ``TypeError`` from deep inside a loader.
    """
    try:
        yield
    except GltError:
        raise
    except _MALFORMED as e:
        raise GltError(
            f"{what} {path} is malformed ({type(e).__name__}: {e}): {fix}"
        ) from e


@contextlib.contextmanager
def read_result(
    path: str | os.PathLike, fmt: str, what: str, fix: str = "delete it and re-run", *, key: str = "format"
) -> Iterator[dict[str, Any]]:
    """Read a saved result's JSON and rebuild it inside ``with``; every failure is one GltError.

    The file must exist, parse, and carry ``{key: fmt}``; errors raised while rebuilding the
    result from the yielded dict become GltError too (`malformed`), naming the file and ``fix``.

    Example:
        >>> import tempfile
        >>> f = write_json(Path(tempfile.mkdtemp()) / "r.json", {"format": "demo/1", "n": 3})
        >>> with read_result(f, "demo/1", "demo result") as data:
        ...     n = int(data["n"])
        >>> n
        3
    """
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise GltError(f"{path} is not a glt {what} (it holds a JSON {type(data).__name__}, not an "
                       "object): pass a file written by its .save()")
    if data.get(key) != fmt:
        raise GltError(f"{path} is not a glt {what} ({key} {data.get(key)!r}, expected {fmt!r}): "
                       "pass a file written by its .save()")
    with malformed(path, what, fix):
        yield data


def _publish_modes(tmp: Path) -> None:
    """Give the folder and its files the usual permissions (mkdtemp/mkstemp make them private)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)
    for f in tmp.iterdir():
        if f.is_file():
            os.chmod(f, 0o666 & ~mask)


def replace_dir(tmp: Path, path: Path) -> None:
    """Put the finished folder ``tmp`` at ``path``, replacing what was there.

    POSIX cannot swap two folders in one rename, so the old folder is first moved aside to
    ``.<name>.old.<random>/<name>`` beside ``path`` and deleted only after the new one is in
    place. A crash between the two renames leaves the old folder aside, never a half-written one
    at ``path``; `recover_dir` (called by every reader) moves it back.
    """
    _publish_modes(tmp)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise GltError(f"path {path} exists and is not a folder: pass a folder path")
    if not path.exists():
        os.replace(tmp, path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
    os.replace(path, old / path.name)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old / path.name, path)
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(path: str | os.PathLike) -> Path:
    """Undo an interrupted `replace_dir`: if ``path`` is missing, move the folder set aside back.

    Returns ``path``. Where several were set aside (several crashes), the newest is restored.
    """
    path = Path(path)
    if path.exists() or not path.parent.is_dir():
        return path
    aside = [p for p in path.parent.glob(f".{path.name}.old.*/{path.name}") if p.is_dir()]
    if aside:
        newest = max(aside, key=lambda p: p.stat().st_mtime)
        os.replace(newest, path)
        shutil.rmtree(newest.parent, ignore_errors=True)
    return path

"""Atomic, non-executable persistence: JSON and safetensors, written to a temp file then renamed.

Every OS error while writing or reading (a file where a folder is expected, a folder that cannot
be written, a full disk) becomes one `GltError` naming the path and the fix (`writing`, the path
rules of `glt.core._paths`); missing parent folders are created.
"""

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
from glt.core._paths import file_target, folder_target, os_error_message

__all__ = [
    "atomic_dir", "atomic_write_bytes", "atomic_write_text", "malformed", "read_json", "recover_dir",
    "replace_dir", "write_json", "writing",
]


@contextlib.contextmanager
def writing(path: str | os.PathLike, what: str = "file", verb: str = "write") -> Iterator[None]:
    """Turn an OSError raised inside ``with`` into a GltError naming ``path`` and the fix."""
    try:
        yield
    except GltError:
        raise
    except OSError as e:
        raise GltError(os_error_message(path, what, e, verb)) from e


def atomic_write_bytes(path: str | os.PathLike, data: bytes, what: str = "file") -> Path:
    """Write ``data`` to ``path`` atomically: a crash leaves the old file or none, never half.

    Missing parent folders are created. A folder at ``path``, a file among its parents, a folder
    that cannot be written or a full disk raise GltError naming the path; the temporary file is
    removed and an older file at ``path`` is left as it was.
    """
    path = file_target(path, what)
    with writing(path, what):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; results are meant to be shared
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, what: str = "file") -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (errors as `atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"), what)


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


def write_json(path: str | os.PathLike, obj: Any, what: str = "file") -> Path:
    """Write ``obj`` as JSON atomically (tensors and arrays become lists, NaN becomes null)."""
    return atomic_write_text(path, json.dumps(_clean(obj), indent=1, allow_nan=False), what)


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read JSON, raising GltError naming the file and the fix if it is missing or corrupt."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise GltError(f"{what} {path} does not exist: check the path") from e
    except OSError as e:
        raise GltError(os_error_message(path, what, e, "read")) from e
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
    path = folder_target(path, "folder")
    with writing(path, "folder"):
        _publish_modes(tmp)
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


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, what: str = "folder") -> Iterator[Path]:
    """Build a folder under a temporary name beside ``path``; it replaces ``path`` when ``with`` ends.

    Missing parents are created. If the body raises (an OSError becomes GltError naming ``path``),
    the temporary folder is deleted and ``path`` keeps what it held.

    Example:
        >>> import tempfile
        >>> with atomic_dir(Path(tempfile.mkdtemp()) / "my lens") as tmp:
        ...     _ = (tmp / "config.json").write_text("{}")
    """
    path = folder_target(path, what)
    with writing(path, what):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            yield tmp
            replace_dir(tmp, path)
        except GltError as e:  # a writer inside named the temporary folder: name the destination
            if str(tmp) not in str(e):
                raise
            raise GltError(str(e).replace(str(tmp), str(path))) from e
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


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

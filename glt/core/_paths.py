"""Path checks and OS-error messages shared by every writer, loader and command.

One rule for every path glt writes: a missing parent folder is created; a file where a folder is
expected (or a folder where a file is expected), a parent that is a file, a folder that cannot be
written and a full disk each raise `GltError` naming the path and the fix, before anything is
written where possible, and never leave a half-written result where a later run would trust it
(the writers in `glt.core._io` build under a temporary name and rename into place). Paths with
spaces or non-ASCII characters are ordinary paths.

Example:
    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "a file"
    >>> _ = f.write_text("x")
    >>> try:
    ...     folder_target(f, "--out")
    ... except GltError as e:
    ...     print(str(e).split(":")[0].endswith("is a file, not a folder"))
    True
"""

import errno
import os
from pathlib import Path

from glt.core._errors import GltError

__all__ = ["existing_file", "existing_folder", "file_target", "folder_target", "os_error_message"]

_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}


def _file_ancestor(path: Path) -> Path | None:
    """The first parent of ``path`` that exists and is not a folder (None when there is none)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _check_parents(path: Path, what: str) -> None:
    blocker = _file_ancestor(path)
    if blocker is not None:
        raise GltError(f"{what} {path} cannot be created: {blocker} is a file, not a folder: pass a path "
                       "whose parent folders are folders (missing ones are created)")


def folder_target(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Check that a folder may be written at ``path`` (missing, or a folder); return it as a Path.

    Raises GltError when ``path`` is a file or one of its parents is a file.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise GltError(f"{what} {path} is a file, not a folder: pass a folder path (it is created if missing)")
    _check_parents(path, what)
    return path


def file_target(path: str | os.PathLike, what: str = "output file") -> Path:
    """Check that a file may be written at ``path`` (missing, or a file); return it as a Path.

    Raises GltError when ``path`` is a folder or one of its parents is a file.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise GltError(f"{what} {path} is a folder, not a file: pass a file path, e.g. {path / 'result.json'}")
    _check_parents(path, what)
    return path


def existing_folder(path: str | os.PathLike, what: str = "folder") -> Path:
    """``path`` as a Path; GltError unless it is an existing folder."""
    path = Path(path).expanduser()
    if not path.exists():
        raise GltError(f"{what} {path} does not exist: check the path")
    if not path.is_dir():
        raise GltError(f"{what} {path} is a file, not a folder: pass the folder that holds it ({path.parent})")
    return path


def existing_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` as a Path; GltError unless it is an existing file."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise GltError(f"{what} {path} is a folder, not a file: pass a file inside it")
    if not path.exists():
        raise GltError(f"{what} {path} does not exist: check the path")
    return path


def os_error_message(path: str | os.PathLike, what: str, e: OSError, verb: str = "write") -> str:
    """What went wrong with ``path`` and how to fix it, for an OSError raised reading or writing it."""
    path = Path(path)
    where = f" ({e.filename})" if e.filename and str(e.filename) != str(path) else ""
    if e.errno in _FULL:
        return (f"cannot {verb} {what} {path}: no space left on the device{where}; nothing was kept: free some "
                "space or pass a path on another disk")
    if isinstance(e, PermissionError) or e.errno == errno.EROFS:
        return (f"cannot {verb} {what} {path}: permission denied{where}: pass a path in a folder you can "
                f"{verb}, or change its permissions")
    if isinstance(e, IsADirectoryError) or (verb == "read" and path.is_dir()):
        return f"cannot {verb} {what} {path}: it is a folder, not a file: pass a file path"
    if isinstance(e, (NotADirectoryError, FileExistsError)):
        blocker = _file_ancestor(path) or (path if path.exists() and not path.is_dir() else None)
        if blocker is not None:
            return f"cannot {verb} {what} {path}: {blocker} is a file, not a folder: pass another path"
    if isinstance(e, FileNotFoundError):
        return f"{what} {path} does not exist: check the path"
    return f"cannot {verb} {what} {path} ({e.strerror or e}){where}: check the path and its permissions"

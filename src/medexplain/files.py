"""Files: atomic output (a result is complete on disk or absent, never half-written), checked JSON and CSV.

Every file the library writes goes through these helpers.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medexplain.errors import MedexplainError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def writing(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Turn an operating-system error while writing into one line naming ``folder`` (a full disk, no permission)."""
    try:
        yield
    except OSError as error:
        raise MedexplainError(f"{folder}: cannot write ({error.strerror or error})") from None


@contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on error removed.

    The file gets the permissions of any file the user creates (``0o666`` less the umask); an operating-system
    error (a full disk, a read-only folder) becomes a :class:`MedexplainError` naming the folder.
    """
    target = Path(path)
    with writing(target.parent):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    tmp = Path(tmp_name)
    try:
        with writing(target.parent):
            yield tmp
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


@contextmanager
def atomic_directory(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it becomes ``path``, on error it is removed.

    An existing non-empty ``path`` is an error unless ``overwrite``, in which case it is replaced only once
    the new directory is complete. The folder gets the user's usual permissions (``0o777`` less the umask).
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise MedexplainError(f"{target}: exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise MedexplainError(f"{target}: directory exists and is not empty (set `overwrite` to replace it)",
                              parameter="overwrite")  # fmt: skip
    with writing(target.parent):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        with writing(target.parent):
            yield tmp
            os.chmod(tmp, 0o777 & ~_umask())
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
                os.replace(target, old / target.name)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


LOCK_FILE = ".medexplain.lock"


@contextmanager
def exclusive_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold ``path`` (a folder, created when missing) for the block; another process holding it is refused.

    The lock is an advisory ``flock`` on ``path/.medexplain.lock``, released when the block ends or the process
    dies, so a killed run never leaves a stale lock.
    """
    import fcntl

    folder = Path(path)
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MedexplainError(
                f"{folder}: another medexplain process is writing this folder; wait for it to finish or choose "
                "another output folder"
            ) from None
        yield folder
    finally:
        os.close(fd)


def read_json(path: str | os.PathLike[str], *, format_prefix: str | None = None) -> dict[str, Any]:
    """The JSON object in ``path``; a missing, unreadable or malformed file is a :class:`MedexplainError`.

    ``format_prefix``: the document's ``"format"`` field must start with it (e.g. ``"medexplain-run/"``).
    """
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MedexplainError(f"{path}: no such file") from None
    except OSError as error:
        raise MedexplainError(f"{path}: cannot read ({error.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MedexplainError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise MedexplainError(f"{path}: expected a JSON object, got {type(value).__name__}")
    if format_prefix is not None and not str(value.get("format", "")).startswith(format_prefix):
        raise MedexplainError(f"{path}: not a {format_prefix.rstrip('/')} file (format {value.get('format')!r})")
    return value


def csv_text(rows: Iterable[Mapping[str, Any]], fields: Sequence[str] | None = None) -> str:
    """``rows`` as CSV text with a header (``fields``, default: every key in first-seen order), ``\\n`` line ends."""
    rows = list(rows)
    columns = list(fields) if fields is not None else list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()

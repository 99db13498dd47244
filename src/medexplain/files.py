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


@contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on error removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
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
    the new directory is complete.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise MedexplainError(f"{target}: exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise MedexplainError(f"{target}: directory exists and is not empty (use --overwrite to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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

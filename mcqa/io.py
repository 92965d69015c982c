"""File helpers: atomic writes (a run never leaves a half-written file), the checks on an
output path the user names, path components made from untrusted values, JSONL reading
that names the file and line of a bad record, and the checks on values read from untrusted
files (a finite number; a Pydantic validation error in one line)."""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import secrets
import stat
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator

from mcqa.errors import DataError, McqaError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


STALE_TMP_S = 600  # a temporary file this old is the leftover of an interrupted write


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temporary file in the same folder, then rename over the target."""
    # A lone surrogate cannot be UTF-8; written as its escape it stays readable JSON text.
    atomic_write_bytes(path, text.encode("utf-8", errors="backslashreplace"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    # The rename would replace whatever is there: never a device, a pipe or a folder.
    if (path.exists() or path.is_symlink()) and not path.is_file():
        raise McqaError(
            f"{path}: is {_kind(path)}, not a regular file; mcqa writes only regular files, pick another path"
        )
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files owner-only; give the usual mode
        os.replace(tmp, path)
    except OSError as e:
        raise McqaError(
            f"{path}: could not write it ({e.strerror or e}); free space, fix the permissions or pick another folder"
        ) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _remove_leftovers(folder: Path) -> None:
    """Hidden .tmp files of writes that were killed before their rename (recent ones may be
    another process's write in progress, so only old ones go)."""
    now = time.time()
    for p in folder.glob(".*.tmp"):
        try:
            if p.is_file() and not p.is_symlink() and now - p.stat().st_mtime > STALE_TMP_S:
                p.unlink()
        except OSError:
            pass


# ---------------------------------------------------------------- output paths


def unique_name(stem: str) -> str:
    """A default output name no other command picks: the time plus a random suffix, so folds
    launched in the same second do not collide (and the run-folder lock catches the rest).
    Here rather than in mcqa.train.runs so that scoring never imports torch."""
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]+")


def safe_name(value: object) -> str:
    """A file-name component built from a value read from a file (a model or mode name in a
    run folder): no separators, no '..', no leading dot, never empty."""
    name = _UNSAFE.sub("_", str(value)).lstrip(".")[:120]
    return name or "_"


def inside(root: str | Path, path: str | Path) -> Path:
    """`path` itself, when it resolves inside `root`; anything else is refused."""
    root_r, path_r = Path(root).resolve(), Path(path).resolve()
    if path_r != root_r and root_r not in path_r.parents:
        raise McqaError(f"{path}: refusing to write outside {root}")
    return Path(path)


def _kind(path: Path) -> str:
    try:
        mode = path.stat().st_mode
    except OSError:
        return "a broken link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a file"


def _is_leftover(p: Path) -> bool:
    return p.name.startswith(".") and p.name.endswith(".tmp")


def _check_writable_parent(path: Path, flag: str) -> None:
    """The nearest existing folder above `path` must be a folder mcqa may write in."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise McqaError(
            f"{path}: {flag} is inside {parent}, which is {_kind(parent)}, not a folder; pick another {flag}"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise McqaError(f"{path}: cannot write in {parent} (permission denied); pick another {flag}")


def check_out_folder(path: str | Path, flag: str = "--out") -> Path:
    """A folder a command will fill: absent (it is made) or empty. A file, a device, or a folder
    that already holds something (a finished scoring run, say) is refused, never overwritten."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise McqaError(
                f"{path}: {flag} names {_kind(path)}; it must be a new or empty folder, pick another {flag}"
            )
        try:
            held = sorted(p.name for p in path.iterdir() if not _is_leftover(p))
        except OSError as e:
            raise McqaError(f"{path}: cannot read {flag} ({e.strerror}); pick another {flag}") from None
        if held:
            raise McqaError(
                f"{path}: {flag} folder is not empty (it holds {held[0]}{' and more' if len(held) > 1 else ''}); "
                f"mcqa never overwrites a run: pick another {flag} or delete that folder"
            )
        if not os.access(path, os.W_OK | os.X_OK):
            raise McqaError(f"{path}: cannot write in {flag} (permission denied); pick another {flag}")
        return path
    _check_writable_parent(path, flag)
    return path


def check_out_file(path: str | Path, flag: str = "--out") -> Path:
    """A file a command will write: absent, or a regular file (replaced). A folder, a device
    (/dev/null, /dev/full) or a pipe is refused."""
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not path.is_file():
        raise McqaError(f"{path}: {flag} names {_kind(path)}, not a regular file; pick another {flag}")
    _check_writable_parent(path, flag)
    return path


def dumps(obj: Any, **kw) -> str:
    """Strict JSON: a NaN or an infinity (never valid JSON) is written as null."""
    try:
        return json.dumps(obj, ensure_ascii=False, default=_jsonable, allow_nan=False, **kw)
    except ValueError:
        return json.dumps(_finite(obj), ensure_ascii=False, default=_jsonable, allow_nan=False, **kw)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) or hasattr(obj, "item") and not hasattr(obj, "__len__"):
        value = obj.item() if hasattr(obj, "item") else obj
        return None if isinstance(value, float) and not math.isfinite(value) else value
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _finite(obj.tolist())
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, dumps(obj, indent=2) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(dumps(r) + "\n" for r in rows))


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


# ---------------------------------------------------------------- reading


_GZIP_MAGIC = b"\x1f\x8b"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def read_bytes(path: str | Path) -> bytes:
    """A file's bytes, gunzipped when it is gzip (.jsonl.gz works anywhere a .jsonl does); a
    missing, unreadable or damaged file is a DataError naming it."""
    path = Path(path)
    try:
        if not path.exists():
            raise DataError(f"{path}: file not found; check the path")
        if not path.is_file():
            raise DataError(f"{path}: is {_kind(path)}, not a file; pass a file")
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror or e}); check its permissions") from None
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: a damaged or truncated gzip file ({e}); re-copy it") from None
    return data


def read_text(path: str | Path) -> str:
    """A UTF-8 text file (a BOM is tolerated); other bytes are a DataError naming the line."""
    data = read_bytes(path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        binary = b"\x00" in data[:4096] or data[:8] == b"\x89PNG\r\n\x1a\n"
        what = "a binary file, not text" if binary else f"not UTF-8 text (byte 0x{data[e.start]:02x})"
        raise DataError(f"{path}:{line}: {what}; mcqa reads UTF-8 text files (JSONL, YAML), save it as UTF-8") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not valid JSON (use null or a number)")


def parse_json(text: str, where: str) -> Any:
    """Strict JSON (no NaN or Infinity); every way the decoder can refuse is a DataError at `where`."""
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e.msg}, column {e.colno})") from None
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply to read") from None
    except ValueError as e:  # a number with thousands of digits, NaN, Infinity
        raise DataError(f"{where}: not valid JSON ({str(e).splitlines()[0]})") from None
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(f"{where}: a lone surrogate escape (\\ud800-\\udfff) is not valid Unicode text") from None
    return obj


def read_json(path: str | Path) -> Any:
    path = Path(path)
    text = read_text(path)
    if not text.strip():
        raise DataError(f"{path}: empty file, expected JSON")
    return parse_json(text, str(path))


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line; a bad line raises DataError naming it."""
    path = Path(path)
    for lineno, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        obj = parse_json(line, f"{path}:{lineno}")
        if not isinstance(obj, dict):
            raise DataError(
                f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}; each line must be one JSON object"
            )
        yield lineno, obj


def is_number(value: Any) -> bool:
    """A finite int or float read from an untrusted file (a bool, NaN or infinity is not one)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validation_problems(error, root: str = "") -> str:
    """A Pydantic ValidationError in one line: "field.sub: message; ...", `root` naming a
    problem with the whole object."""
    return "; ".join(f"{'.'.join(map(str, x['loc'])) or root}: {x['msg']}" for x in error.errors())

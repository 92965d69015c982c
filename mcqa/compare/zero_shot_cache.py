"""Zero-shot predictions cached on disk, so a second `mcqa compare` (another table, more rows, a
trained run added) does not read a base model out again: on this machine one zero-shot pass of a
0.5B model over recipe_mpr's five folds takes half an hour.

The key is a digest of everything the predictions depend on: the model (its local folder: the
config and each weight file's name, size and modification time), the readout and its options,
the task, the fold, the predicted examples and the validation examples its temperature is
fitted on (ids, inputs, gold), mcqa's version and the source of the code that turns a model into
predictions (readouts, prompting, encoding, calibration, prediction, model loading) and of the
task's module. A model named by hub id is not cached: without the hub its weights cannot be
identified. Entries are read back through mcqa.compare.baseline_cache, whose reader treats a cache file
as untrusted input (one that does not read back whole is ignored, with a line)."""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path

from mcqa.compare.baseline_cache import cache_key
from mcqa.model.loading import resolve_model
from mcqa.paths import ZERO_SHOT_CACHE
from mcqa.task import Example, Task

DEFAULT_CACHE = ZERO_SHOT_CACHE
_PACKAGE = Path(__file__).resolve().parent.parent
# The code between a model's weights and its predictions: an edit to any of it reads the model out again.
# Each pattern is relative to the package and must match a file (a test checks it, so a moved file
# cannot silently drop out of the key).
_CODE = (
    "readouts/*.py",
    "prompting.py",
    "model/encoding.py",
    "model/choice_rows.py",
    "eval/calibration.py",
    "predicting.py",
    "model/loading.py",
    "model/lm.py",
)


def model_identity(model: str) -> str | None:
    """A digest of a local model folder (config, and each weight file's name, size and mtime), or
    None for a hub id, which is then not cached."""
    path = resolve_model(model)
    if not isinstance(path, Path):
        return None
    h = hashlib.sha256(str(path.resolve()).encode())
    for f in sorted(path.iterdir()):
        if f.is_file() and not f.is_symlink():
            st = f.stat()
            h.update(json.dumps([f.name, st.st_size, st.st_mtime_ns]).encode())
            if f.name == "config.json":
                h.update(f.read_bytes())
    return h.hexdigest()


def code_digest(task: Task) -> str:
    h = hashlib.sha256()
    for pattern in _CODE:
        for f in sorted(_PACKAGE.glob(pattern)):
            h.update(f.name.encode() + f.read_bytes())
    try:
        h.update(Path(inspect.getsourcefile(task.messages) or "").read_bytes())
    except (OSError, TypeError):
        pass
    return h.hexdigest()


def zero_shot_key(
    identity: str, spec: str, task: Task, protocol: str, test: list[Example], calibration: list[Example], code: str
) -> str:
    return cache_key(
        f"zero-shot {identity} {spec}", task, protocol, {"test": test, "calibration": calibration}, code=code
    )

"""Raw model output -> a typed parse result. Parse failures are data, not exceptions: every
output gets a status, and the raw text is always kept by the caller.

Statuses, in the order they are decided:
- thinking_leak     a <think> block in the output (Qwen3 must run with thinking off)
- no_json           no JSON object and no bare label
- invalid_json      something JSON-like that does not decode
- schema_error      a JSON object with missing, extra or mistyped fields
- out_of_label_set  right shape, but a value outside the field's allowed labels
- truncated         any of the three failures above when the producer says it hit its token limit
- ok                valid under both the Pydantic model and the JSON Schema
Tolerated and noted: code fences ("fenced"), prose around the object ("prose"), and for a
one-field task a bare label such as `physics` or `B` ("bare_label").

No torch here: parsing must stay cheap and importable anywhere.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

import jsonschema
from pydantic import BaseModel, ValidationError

from mcqa.io import validation_problems
from mcqa.task import label_spaces

STATUSES = ("ok", "no_json", "invalid_json", "schema_error", "out_of_label_set", "truncated", "thinking_leak")
FAILURES = STATUSES[1:]

_THINK = re.compile(r"</?think>")
_FENCE = re.compile(r"```[a-zA-Z]*\s*(.*?)```", re.S)
# Keywords whose failure means "right type, value outside the label set" rather than a shape error.
_LABEL_KEYWORDS = {"enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
_BARE_STRIP = " \t\r\n\"'`*.()[]"
_BARE_MAX_WORDS = 4
# Where a JSON object can start: "{" then, after blanks, a key's quote or "}". Only these are
# tried, at most MAX_CANDIDATES per output, so the work per output is linear in its length
# (a failed decode costs a scan back to the start of the text, in the decoder's error message).
_OBJECT_START = re.compile(r'\{\s*["}]')
MAX_CANDIDATES = 64
MAX_DEPTH = 32  # a label object is 1-3 levels deep; far deeper nesting would exhaust the validators' stack
MAX_ERRORS = 20

# JSON Schema calls 2.0 an integer; Pydantic (strict) does not, and neither do we: a label is
# emitted exactly. Redefining "integer" keeps the two validators in agreement.
_TYPE_CHECKER = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda _, x: isinstance(x, int) and not isinstance(x, bool)
)
StrictValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=_TYPE_CHECKER)


@dataclass(frozen=True)
class Parsed:
    status: str
    value: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class OutputParser:
    """Parses and validates outputs against one task's Pydantic model and JSON Schema."""

    def __init__(self, model: type[BaseModel], schema: dict | None = None):
        self.model = model
        self.schema = schema if schema is not None else model.model_json_schema()
        self.json_validator = StrictValidator(self.schema)
        spaces = label_spaces(model)
        self.fields = list(model.model_fields)
        only = spaces[self.fields[0]] if len(self.fields) == 1 else None
        self._bare = {str(v).lower(): v for v in only.values} if only else None

    def parse(self, raw: Any, truncated: bool = False) -> Parsed:
        result = self._parse(raw if isinstance(raw, str) else "")
        if truncated and result.status in ("no_json", "invalid_json", "schema_error"):
            return Parsed("truncated", None, result.notes, f"hit the token limit: {result.error}")
        return result

    def _parse(self, raw: str) -> Parsed:
        if _THINK.search(raw):
            return Parsed("thinking_leak", error="output contains a <think> block")
        notes: list[str] = []
        text = raw
        fence = _FENCE.search(raw)
        if fence:
            notes.append("fenced")
            text = fence.group(1)
        obj, start, end, json_like = _first_object(text)
        if obj is None:
            return self._bare_label(text, notes, json_like)
        if _first_object(text[end:])[0] is not None:
            notes.append("several_objects")  # a hedging model: the first object is the answer
        if (
            text[:start].strip()
            or text[end:].strip()
            or (fence and (raw[: fence.start()].strip() or raw[fence.end() :].strip()))
        ):
            notes.append("prose")
        return self.validate(obj, tuple(notes))

    def validate(self, obj: Any, notes: tuple[str, ...] = ()) -> Parsed:
        """Validate a decoded JSON value with both validators; they must agree to pass."""
        if _deeper_than(obj, MAX_DEPTH):
            return Parsed("schema_error", None, notes, f"nested more than {MAX_DEPTH} levels deep")
        errors = list(itertools.islice(self.json_validator.iter_errors(obj), MAX_ERRORS))
        try:
            value = self.model.model_validate_json(json.dumps(obj), strict=True).model_dump(mode="json")
            pydantic_error = ""
        except ValidationError as e:
            value, pydantic_error = None, validation_problems(e, root="<root>")
        if not errors and value is not None:
            return Parsed("ok", value, notes)
        if not errors:  # Pydantic alone refused: report it as a shape error, never silently pass
            return Parsed("schema_error", None, notes, pydantic_error)
        label_only = all(_is_label_error(e) for e in errors)
        message = "; ".join(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)
        return Parsed("out_of_label_set" if label_only else "schema_error", None, notes, message)

    def _bare_label(self, text: str, notes: list[str], json_like: bool) -> Parsed:
        bare = text.strip(_BARE_STRIP)
        if self._bare is not None and bare and "{" not in text:
            if bare.lower() in self._bare:
                return Parsed("ok", {self.fields[0]: self._bare[bare.lower()]}, (*notes, "bare_label"))
            if len(bare.split()) <= _BARE_MAX_WORDS and "\n" not in bare:
                return Parsed("out_of_label_set", None, (*notes, "bare_label"), f"{bare!r} is not an allowed label")
        if json_like:
            return Parsed("invalid_json", None, tuple(notes), "found '{' but no JSON object decodes")
        return Parsed("no_json", None, tuple(notes), "no JSON object in the output")


def _first_object(text: str) -> tuple[dict | None, int, int, bool]:
    """The first decodable JSON object in text: (object, start, end, saw a '{')."""
    decoder = json.JSONDecoder()
    for n, m in enumerate(_OBJECT_START.finditer(text)):
        if n == MAX_CANDIDATES:
            break
        try:
            obj, end = decoder.raw_decode(text, m.start())
            if isinstance(obj, dict):
                return obj, m.start(), end, True
        except (ValueError, RecursionError):  # JSONDecodeError, and ValueError for huge ints
            pass
    return None, -1, -1, "{" in text


def _deeper_than(obj: Any, limit: int) -> bool:
    """Whether a decoded JSON value nests more than `limit` levels (iteratively: no recursion)."""
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return False


def _is_label_error(error: jsonschema.ValidationError) -> bool:
    if error.validator in _LABEL_KEYWORDS:
        return True
    # An Enum field is a $ref/allOf wrapper around an enum; look at the innermost cause.
    return bool(error.context) and all(_is_label_error(c) for c in error.context)

"""What every request schema shares, on both sides of the API/worker boundary.

`WireModel` is the base of every model a client fills in (API request bodies and query models, job
params): its floats refuse NaN and ±Infinity (JSON's `NaN`, `Infinity` and an overflowing `1e309`,
which Python's json reads as inf). A non-finite psi or fps would otherwise pass `ge`/`le` checks
(NaN compares false) and fail later, far from the request, or break the JSON we answer with.

`Name` and `Text` are the strings a client names things with: no control characters (a NUL cannot be
stored in PostgreSQL text and cuts C strings; an escape sequence rewrites a terminal that shows a log),
no unpaired surrogates (not encodable as UTF-8, so the database write fails), no bidirectional overrides
(they make a name display as another). `Text` allows tab and newline, for free text such as a
licence note.

`MAX_INT64` bounds every integer a client sends that could reach SQL or a C integer: Python ints
are unbounded, and 2**64 in a query parameter overflows the database driver instead of failing
validation.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from gan.vocabulary import MAX_SEED

MAX_INT64 = 2**63 - 1
# A seed as every request takes it: NumPy's RandomState accepts [0, 2**32 - 1] (gan.vocabulary).
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]

# C0 and C1 controls (Unicode category Cc), unpaired surrogates (Cs), and the explicit bidi embeddings,
# overrides and isolates (UAX #9 §2), format characters that reorder the text around them; other format
# characters (zero-width joiners in emoji) are fine. One regex, so a long value costs one C-speed scan.
_BIDI = "\u202a-\u202e\u2066-\u2069"
_NAME_REFUSED = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff" + _BIDI + "]")
_TEXT_REFUSED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff" + _BIDI + "]")


class WireModel(BaseModel):
    """Base of the request schemas: finite floats only (subclasses add their own config on top)."""

    model_config = ConfigDict(allow_inf_nan=False)


def _refuse(pattern: re.Pattern[str], value: str) -> str:
    found = pattern.search(value)
    if found is not None:
        char = found.group()
        raise ValueError(
            f"must not contain control characters (U+{ord(char):04X} at position {found.start()})"
        )
    return value


def check_name(value: str) -> str:
    """A one-line name: no control characters at all (tab and newline included)."""
    return _refuse(_NAME_REFUSED, value)


def check_text(value: str) -> str:
    """Free text: tab, newline and carriage return allowed, other control characters refused."""
    return _refuse(_TEXT_REFUSED, value)


Name = Annotated[str, AfterValidator(check_name)]
Text = Annotated[str, AfterValidator(check_text)]


# Our deepest schema (a video's translate path inside a request) nests four levels; 32 leaves room for
# any label file while staying far below the parser's recursion limit (about 1000 in CPython), past
# which `json.loads` raises RecursionError instead of a ValueError.
MAX_JSON_DEPTH = 32
# A JSON string, escapes included; once strings are gone, only brackets are kept.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def json_depth(document: bytes | str) -> int:
    """How deep a JSON document nests arrays and objects, found without parsing it (which is what must
    not happen to a hostile one): strings are dropped, and the running count of opening minus closing
    brackets is taken over what is left, all at C speed (under 40 ms for a MiB of brackets)."""
    raw = document.encode("utf-8", "surrogatepass") if isinstance(document, str) else document
    brackets = np.frombuffer(_JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS), dtype=np.uint8)
    if brackets.size == 0:
        return 0
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1).astype(np.int64)
    return int(np.cumsum(steps).max())


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a number")
    return value


def load_json(document: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads` for a client's JSON outside a schema (a form field): refuses nesting deeper than
    `max_depth` before parsing, and NaN, Infinity or a number that overflows to inf while parsing.
    Every refusal is a ValueError (json.JSONDecodeError for malformed text)."""
    depth = json_depth(document)
    if depth > max_depth:
        raise ValueError(f"nested {depth} levels deep; at most {max_depth} are accepted")
    return json.loads(document, parse_constant=_refuse_constant, parse_float=_finite_float)

"""What the stores and the scripts can hold, written once: every limit, and the types
that apply them at the doors (the event models, the HTTP bodies).

The tables declare their columns with these lengths (``String(ID_MAX)``) and
``tests/shared/test_limits.py`` reads each ``String(n)`` back from the SQLAlchemy tables
and checks the models' ``max_length``, so a model and its table cannot drift. A value
outside these limits is refused where it arrives, with a reason: a stream entry is
dead-lettered by its consumer (its batch neighbours go on), an HTTP body gets a 422.
It is never acknowledged first and refused by the store later.

What no store or script can hold, anywhere:

- NaN and the infinities (``NaN``, ``Infinity`` and ``1e999`` are what JSON parsers
  accept): PostgreSQL's ``json`` refuses them, a Lua script's comparisons go wrong on
  them, and pydantic writes them as ``null``, which the next reader refuses.
- The NUL character, in any string, a dict key or a string inside a payload:
  PostgreSQL text cannot hold it.
- Integers beyond 64 bits inside a payload (orjson, which writes the router's tasks,
  refuses them), and payloads nested deeper than ``JSON_DEPTH_MAX``.

Ids and names (projects, items, users, versions, tasks) refuse every control character
(C0, DEL): an item id with a newline or an escape code is a mistake, and it would show
in exports and logs as something else. Labels refuse them too but for the tab, the
newline and the carriage return, which real Label Studio exports hold in labels and
which an import must keep exactly (tests/labels/test_labelstudio.py). Free text
(messages, notes, reasons) may hold any character but NUL.

A pure module (pydantic only), so that shared.events, the tables and the HTTP models
all take their limits from here.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints, WithJsonSchema

# --- column lengths (the tables use these) -------------------------------------------------

PROJECT_MAX = 64
ID_MAX = 256  # item ids, user and labeler ids
LABEL_MAX = 256  # a label, a label option, a pre-label
VERSION_MAX = 64  # model and guideline versions
TASK_ID_MAX = 64
BATCH_ID_MAX = 64
EVENT_ID_MAX = 36  # a UUID as text
VERSION_NAME_MAX = 128  # a label-set version's name
ROLE_MAX = 32
SOURCE_MAX = 16  # a label's source and mode
CLIENT_MAX = 512  # the audit log's client description
FINDING_KEY_MAX = 512

# --- limits of free text and values that have no column of their own -----------------------

MESSAGE_MAX = 10_000  # a version's message
NOTE_MAX = 2_000  # a note when a flag is cleared
TEXT_MAX = 100_000  # an item's text
JSON_DEPTH_MAX = 32  # nesting of a payload, a model's metrics, the settings' notes
INT32_MAX = 2**31 - 1  # an Integer column
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

PROJECT_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{PROJECT_MAX - 1}}}$"

# The config every model at a door uses: no NaN or infinity in any float field
# (``dict[str, float]`` values and ``list[float]`` items included).
FINITE = ConfigDict(allow_inf_nan=False)

_PROJECT = re.compile(PROJECT_PATTERN)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_WHITESPACE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _where(found: re.Match[str]) -> str:
    return f"{found.group()!r} at position {found.start()}"


def no_control_characters(value: str) -> str:
    """A name or an id: no control character (C0 or DEL), NUL included."""
    found = _CONTROL.search(value)
    if found is not None:
        raise ValueError(f"must not contain control characters (found {_where(found)})")
    return value


def label_characters(value: str) -> str:
    """A label: no control character but the tab, the newline and the carriage return."""
    found = _CONTROL_BUT_WHITESPACE.search(value)
    if found is not None:
        raise ValueError("must not contain control characters other than tab and newline "
                         f"(found {_where(found)})")
    return value


def no_nul(value: str) -> str:
    """Free text: newlines and tabs are fine, NUL is not (PostgreSQL text cannot hold it)."""
    if "\x00" in value:
        raise ValueError(f"must not contain the NUL character (at position {value.index(chr(0))})")
    return value


def _storable(value: Any, path: str, depth: int) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{path or 'value'}: a string must not contain the NUL character")
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path or 'value'}: {value} is not a finite number")
    elif isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"{path or 'value'}: integer beyond 64 bits")
    elif isinstance(value, dict | list):
        if depth >= JSON_DEPTH_MAX:
            raise ValueError(f"{path or 'value'}: nested deeper than {JSON_DEPTH_MAX} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise ValueError(f"{path or 'value'}: keys must be strings")
                if "\x00" in key:
                    raise ValueError(f"{path or 'value'}: a key must not contain the NUL "
                                     "character")
                _storable(item, f"{path}.{key}" if path else key, depth + 1)
        else:
            for index, item in enumerate(value):
                _storable(item, f"{path}[{index}]", depth + 1)
    else:
        raise ValueError(f"{path or 'value'}: {type(value).__name__} is not a JSON value")


def storable_json(value: Any) -> Any:
    """A JSON document every store and script can hold: finite numbers, 64-bit integers,
    no NUL in a string or a key, nested at most ``JSON_DEPTH_MAX`` levels."""
    _storable(value, "", 0)
    return value


# Written out (not made by a function) so that mypy sees each as a type.
_NAME = AfterValidator(no_control_characters)
_LABEL = AfterValidator(label_characters)
_TEXT = AfterValidator(no_nul)
def project_name(value: str) -> str:
    if _PROJECT.fullmatch(value) is None:
        raise ValueError(f"{value[:PROJECT_MAX]!r} is not a project name "
                         f"({PROJECT_PATTERN})")
    return value


# The pattern is in the JSON schema (what producers and schemathesis read); the check
# says what a project name is, in the words every door uses.
Project = Annotated[str, AfterValidator(project_name),
                    WithJsonSchema({"type": "string", "pattern": PROJECT_PATTERN})]
ItemId = Annotated[str, StringConstraints(min_length=1, max_length=ID_MAX), _NAME]
UserId = Annotated[str, StringConstraints(min_length=1, max_length=ID_MAX), _NAME]
Label = Annotated[str, StringConstraints(min_length=1, max_length=LABEL_MAX), _LABEL]
Version = Annotated[str, StringConstraints(min_length=1, max_length=VERSION_MAX), _NAME]
TaskId = Annotated[str, StringConstraints(min_length=1, max_length=TASK_ID_MAX), _NAME]
BatchId = Annotated[str, StringConstraints(min_length=1, max_length=BATCH_ID_MAX), _NAME]
VersionName = Annotated[str, StringConstraints(min_length=1, max_length=VERSION_NAME_MAX),
                        _NAME]
Name = Annotated[str, StringConstraints(min_length=1, max_length=ID_MAX), _NAME]  # a class...
# A comparison's candidate: short, and without '>' (a ranking's label joins ids with it).
CANDIDATE_ID_MAX = 28  # 8 ids and 7 separators fit a label (LABEL_MAX)
CandidateId = Annotated[str, StringConstraints(min_length=1, max_length=CANDIDATE_ID_MAX,
                                               pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
EventRef = Annotated[str, StringConstraints(min_length=1, max_length=EVENT_ID_MAX),
                     _NAME]  # an event id as text
# A guideline version as the quality service names it ("" for labels without one).
GuidelineName = Annotated[str, StringConstraints(max_length=VERSION_MAX), _NAME]
Text = Annotated[str, StringConstraints(max_length=TEXT_MAX), _TEXT]  # an item's text
Message = Annotated[str, StringConstraints(max_length=MESSAGE_MAX), _TEXT]
Note = Annotated[str, StringConstraints(max_length=NOTE_MAX), _TEXT]
JsonObject = Annotated[dict[str, Any], AfterValidator(storable_json)]
JsonList = Annotated[list[Any], AfterValidator(storable_json)]
Count = Annotated[int, Field(ge=0, le=INT32_MAX)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]

"""State: one interface (`store.base.Store`), two backends (SQLite and Firestore)."""
from __future__ import annotations

import re
from typing import Any, Iterable
from urllib.parse import urlsplit

from mailbridge.store.base import Filter, Store

OPS = ("==", "!=", "<", "<=", ">", ">=", "in")
RANGE_OPS = ("<", "<=", ">", ">=")
MAX_IN_VALUES = 30                     # Firestore's limit, kept by both backends alike
_FIELD_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SCALARS = (str, int, float, bool)


def open_store(url: str) -> Store:
    """The store a MAILBRIDGE_STORE value names; the backend module is imported only here.

    `sqlite:///relative/path.db`, `sqlite:////abs/path.db`, `firestore`, `firestore://PROJECT`,
    `firestore://PROJECT/DATABASE`. Raises ValueError for anything else.
    """
    url = (url or "").strip()
    if url == "firestore" or url.startswith("firestore://"):
        from mailbridge.store.firestore import FirestoreStore
        parts = urlsplit(url) if "://" in url else None
        project = parts.netloc if parts and parts.netloc else None
        database = parts.path.strip("/") if parts and parts.path.strip("/") else "(default)"
        return FirestoreStore(project=project, database=database)
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        from mailbridge.store.sqlite import SqliteStore
        # sqlite:///rel.db -> "rel.db"; sqlite:////abs.db -> "/abs.db" (SQLAlchemy's convention).
        return SqliteStore(url[len("sqlite:///"):])
    raise ValueError(f"MAILBRIDGE_STORE must be sqlite:///PATH or firestore[://PROJECT[/DATABASE]], not {url!r}")


def check_field(field: str) -> list[str]:
    """The parts of a (dotted) field name; ValueError unless each is a plain identifier.

    Plain identifiers keep both backends' paths unquoted and injection-free.
    """
    parts = field.split(".") if isinstance(field, str) else []
    if not parts or not all(_FIELD_PART.match(p) for p in parts):
        raise ValueError(f"field must be a dotted path of identifiers, not {field!r}")
    return parts


def check_filters(where: Iterable[Filter]) -> list[Filter]:
    """Validate filters as base.Filter describes them; ValueError names the bad one."""
    checked = []
    for flt in where:
        field, op, value = flt
        check_field(field)
        if op not in OPS:
            raise ValueError(f"unknown filter operator {op!r}")
        if op == "in":
            if not isinstance(value, (list, tuple)) or len(value) > MAX_IN_VALUES:
                raise ValueError(f"'in' needs a list of at most {MAX_IN_VALUES} values")
            if not all(isinstance(v, _SCALARS) for v in value):
                raise ValueError("'in' values must be str, int, float or bool (no None)")
            value = list(value)
        elif value is None:
            if op in RANGE_OPS:
                raise ValueError(f"{op!r} cannot compare with None")
        elif not isinstance(value, _SCALARS):
            raise ValueError("filter values must be None, str, int, float or bool")
        checked.append((field, op, value))
    return checked


def type_rank(value: Any) -> int:
    """Firestore's order of value types (null < bool < number < string < array < map), used by both."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return 1
    if isinstance(value, (int, float)):
        return 2
    if isinstance(value, str):
        return 3
    return 4 if isinstance(value, list) else 5


def same_value(current: Any, expected: Any) -> bool:
    """Equality that keeps types apart (True is not 1), as Firestore compares values."""
    return type_rank(current) == type_rank(expected) and current == expected


def counter_value(value: Any) -> int:
    """The current count of a counter field (absent: 0); ValueError if it holds something else."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("increment needs an integer field")
    return value

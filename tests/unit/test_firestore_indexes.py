"""Every store query that Firestore can only answer with a composite index has one declared in infra/.

The Firestore emulator needs no indexes, so a missing one would pass every test here and fail in the
cloud. This reads the library's source: each `.query(...)` call that filters and orders by another
field must match an index of infra/mailbridge_infra/firestore.py (filter fields first, then the order)."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

from mailbridge.store import base

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "infra"))
from mailbridge_infra.firestore import INDEXES  # noqa: E402


def composite_queries() -> list[tuple[str, str, tuple[str, ...], str]]:
    """(file:line, collection, equality filter fields, order_by field) of every query that orders."""
    found = []
    for path in (ROOT / "shared" / "mailbridge").rglob("*.py"):
        if "store" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "query" and len(node.args) >= 2):
                continue
            order = next((k.value for k in node.keywords if k.arg == "order_by"), None)
            if not isinstance(order, ast.Constant):
                continue
            collection = getattr(base, node.args[0].id) if isinstance(node.args[0], ast.Name) else None
            assert isinstance(node.args[1], ast.List), f"{path}:{node.lineno}: filters must be a literal list"
            fields = tuple(t.elts[0].value for t in node.args[1].elts)
            found.append((f"{path.name}:{node.lineno}", collection, fields, order.value))
    return found


def test_every_ordered_query_has_a_composite_index():
    declared = {(collection, tuple(f for f, _ in fields if f != "__name__")) for collection, fields in INDEXES}
    queries = composite_queries()
    assert queries, "the scan found no ordered queries: it is not reading the library"
    for where, collection, fields, order in queries:
        if fields and set(fields) != {order}:
            assert (collection, fields + (order,)) in declared, f"{where}: no index on {collection} {fields + (order,)}"

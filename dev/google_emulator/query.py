"""Enough of Gmail's search syntax (`q`) for mailbridge: operators, quoted phrases, -negation, {a b} OR."""
from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass
from typing import Callable

# A token: optional "-", then "{...}" group, or op:"quoted", or op:word, or "quoted", or a bare word.
_TOKEN = re.compile(r'\s*(-?)(?:\{([^}]*)\}|([A-Za-z_]+):"([^"]*)"?|"([^"]*)"?|(\S+))')
_OPERATORS = {"from", "to", "cc", "bcc", "subject", "label", "is", "has", "after", "before",
              "in", "older", "newer", "older_than", "newer_than", "rfc822msgid", "filename",
              "deliveredto", "list"}
_IN = {"inbox": "INBOX", "sent": "SENT", "trash": "TRASH", "spam": "SPAM", "draft": "DRAFT",
       "drafts": "DRAFT", "starred": "STARRED", "important": "IMPORTANT", "chats": "CHAT"}
_IS = {"unread": ("UNREAD", True), "read": ("UNREAD", False), "starred": ("STARRED", True),
       "important": ("IMPORTANT", True)}
_UNITS = {"d": 86400, "m": 31 * 86400, "y": 366 * 86400}


@dataclass
class Doc:
    """The searchable view of one message (all lower-case)."""
    subject: str
    from_: str
    to: str
    cc: str
    bcc: str
    text: str
    filenames: str
    message_id: str
    labels: set[str]
    label_names: set[str]
    internal_ms: int
    has_attachment: bool

    def everywhere(self) -> str:
        return "\n".join((self.subject, self.from_, self.to, self.cc, self.text, self.filenames))


Term = Callable[[Doc], bool]


def _date_seconds(value: str) -> float | None:
    if value.isdigit():
        return float(value)
    m = re.fullmatch(r"(\d{4})[/-](\d{1,2})[/-](\d{1,2})", value)
    if not m:
        return None
    return float(calendar.timegm((int(m[1]), int(m[2]), int(m[3]), 0, 0, 0)))


def _op_term(op: str, value: str, now: Callable[[], float]) -> Term | None:
    v = value.lower()
    fields = {"from": "from_", "to": "to", "cc": "cc", "bcc": "bcc", "subject": "subject",
              "deliveredto": "to", "list": "to", "filename": "filenames"}
    if op in fields:
        attr = fields[op]
        return lambda d: v in getattr(d, attr)
    if op == "label":
        norm = v.replace("-", " ").replace("/", " ")
        return lambda d: v.upper() in d.labels or norm in d.label_names
    if op == "in":
        if v == "anywhere":
            return lambda d: True
        label = _IN.get(v, v.upper())
        return lambda d: label in d.labels or v in d.label_names
    if op == "is" and v in _IS:
        label, present = _IS[v]
        return lambda d: (label in d.labels) == present
    if op == "has" and v in ("attachment", "attachments"):
        return lambda d: d.has_attachment
    if op in ("after", "newer", "before", "older"):
        secs = _date_seconds(v)
        if secs is None:
            return None
        if op in ("after", "newer"):
            return lambda d: d.internal_ms >= secs * 1000
        return lambda d: d.internal_ms < secs * 1000
    if op in ("older_than", "newer_than"):
        m = re.fullmatch(r"(\d+)([dmy])", v)
        if not m:
            return None
        cut = (now() - int(m[1]) * _UNITS[m[2]]) * 1000
        if op == "newer_than":
            return lambda d: d.internal_ms >= cut
        return lambda d: d.internal_ms < cut
    if op == "rfc822msgid":
        return lambda d: v.strip("<>") == d.message_id.strip("<>")
    return None


def _text_term(text: str) -> Term:
    v = text.lower()
    return lambda d: v in d.everywhere()


def parse_query(q: str, now: Callable[[], float] = time.time) -> tuple[list[Term], set[str]]:
    """Compile `q` into AND-ed predicates, plus the labels it names with in:/label: (for spam/trash).

    A quoted phrase is literal text, whatever it contains (`"from:x"` is never an operator).
    Unknown operators are searched as plain text, as Gmail does.
    """
    terms: list[Term] = []
    named: set[str] = set()
    pos = 0
    while pos < len(q):
        m = _TOKEN.match(q, pos)
        if not m or m.end() == pos:
            break
        pos = m.end()
        negate, group, op, op_quoted, phrase, word = m.groups()
        if group is not None:
            inner, inner_named = parse_query(group, now)
            named |= inner_named
            term = (lambda ts: lambda d: any(t(d) for t in ts))(inner) if inner else None
        elif op is not None:
            term = _op_term(op.lower(), op_quoted, now) if op.lower() in _OPERATORS \
                else _text_term(f"{op}:{op_quoted}")
            if op.lower() in ("in", "label"):
                named.add(op_quoted.upper())
        elif phrase is not None:
            term = _text_term(phrase) if phrase else None
        else:
            if word is None or word in ("AND", "OR") and not negate:
                continue  # AND is implicit; a bare OR outside {} is treated as "and" (simplified)
            op_name, sep, value = word.partition(":")
            if sep and op_name.lower() in _OPERATORS and value:
                term = _op_term(op_name.lower(), value, now) or _text_term(word)
                if op_name.lower() in ("in", "label"):
                    named.add(value.upper())
            else:
                term = _text_term(word)
        if term is None:
            continue
        terms.append((lambda t: lambda d: not t(d))(term) if negate else term)
    return terms, named


def matches(terms: list[Term], doc: Doc) -> bool:
    return all(t(doc) for t in terms)

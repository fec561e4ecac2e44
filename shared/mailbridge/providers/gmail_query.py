"""SearchQuery → Gmail's `q` search string, with every piece of user text quoted so it stays literal."""
from __future__ import annotations

import math
import re

from mailbridge.providers.base import SearchQuery

# Gmail's system label ids → the documented search operator for them. Gmail's `label:` operator
# takes label NAMES, so ids like INBOX are spelled the way Gmail's own search box spells them.
_SYSTEM_LABELS = {
    "INBOX": "in:inbox", "SENT": "in:sent", "DRAFT": "in:drafts", "TRASH": "in:trash",
    "SPAM": "in:spam", "CHAT": "in:chats", "STARRED": "is:starred", "IMPORTANT": "is:important",
    "UNREAD": "is:unread", "CATEGORY_PERSONAL": "category:primary", "CATEGORY_SOCIAL": "category:social",
    "CATEGORY_PROMOTIONS": "category:promotions", "CATEGORY_UPDATES": "category:updates",
    "CATEGORY_FORUMS": "category:forums",
}
# Characters that could end or escape a quoted phrase (`"`, `\`) or split the query (controls).
_UNSAFE = re.compile(r'["\\\x00-\x1f\x7f]')


def quote(text: str) -> str | None:
    """`text` as one Gmail quoted phrase, or None when nothing searchable is left.

    Gmail has no escape for `"` inside a quoted phrase, so embedded double quotes are REPLACED BY
    SPACES, and so are backslashes (some parsers read `\\"` as an escaped quote) and control
    characters (CR/LF would split the query); whitespace is then collapsed. Inside the quotes every
    other character — `:`, `-`, `OR`, `{}`, `()` — is literal text, never an operator. Gmail's
    search ignores most punctuation anyway, so the replaced characters lose nothing a user could find.
    """
    cleaned = " ".join(_UNSAFE.sub(" ", text).split())
    return f'"{cleaned}"' if cleaned else None


def label_term(label: str) -> str | None:
    """`in:inbox`-style operators for Gmail's system label ids (any case), `label:"name"` otherwise.

    User labels are matched by NAME (that is what Gmail's `label:` operator takes); a nested label
    `Work/Clients` is written as given, which Gmail accepts.
    """
    system = _SYSTEM_LABELS.get(label.strip().upper())
    if system:
        return system
    quoted = quote(label)
    return f"label:{quoted}" if quoted else None


def to_gmail_query(query: SearchQuery) -> str:
    """The Gmail `q` for `query`: terms AND-ed by spaces, "" when there is no filter at all.

    `q` is one literal quoted phrase; `from_`/`to`/`subject` become `from:"…"` etc.; `after` is
    floored and `before` ceiled to whole epoch seconds (`after:1700000000`), so rounding never drops
    a message in range; `unread` → `is:unread`/`is:read`; `has_attachment` →
    `has:attachment`/`-has:attachment`. A text filter that is empty after cleaning is left out.
    """
    terms: list[str | None] = []
    if query.q:
        terms.append(quote(query.q))
    for operator, value in (("from", query.from_), ("to", query.to), ("subject", query.subject)):
        if value:
            quoted = quote(value)
            terms.append(f"{operator}:{quoted}" if quoted else None)
    if query.label:
        terms.append(label_term(query.label))
    if query.unread is not None:
        terms.append("is:unread" if query.unread else "is:read")
    if query.has_attachment is not None:
        terms.append("has:attachment" if query.has_attachment else "-has:attachment")
    if query.after is not None:
        terms.append(f"after:{math.floor(query.after)}")
    if query.before is not None:
        terms.append(f"before:{math.ceil(query.before)}")
    return " ".join(t for t in terms if t)

"""Header values decoded exactly as `email.policy.default` decodes them, with fast paths for plain ones.

The stdlib's header parser costs 60–150 µs per address header (and `HeaderRegistry[name]` builds a
new class on every call), which made a page of 50 messages cost ~12 ms. Most values are plain
ASCII — `Ann Lee <ann@example.com>, "Lee, Bo" <bo@example.com>`, `Re: lunch`, `text/plain;
charset="UTF-8"` — and for those the stdlib's answer is easy to compute directly. Anything else
(encoded-words, comments, groups, quoted pairs, non-ASCII, domain literals, RFC 2231, stray
separators…) goes to the stdlib, unchanged. tests/unit/test_parse.py checks the fast paths against
the stdlib field for field (corpus, tricky strings, a seeded fuzz); widen a fast path only with it.

Results are cached per header value (bounded LRU, values up to 1 KiB): the messages of a thread
repeat their participants and subject. The functions are pure, so the cache cannot change results.
"""
from __future__ import annotations

import functools
import re
from email import policy as email_policy

# RFC 5322 atext in ASCII: what the stdlib's get_atext accepts, minus anything non-ASCII.
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_ADDR_SPEC = rf"({_DOT_ATOM})@({_DOT_ATOM})"
# A display name: words that start with atext (the stdlib keeps "J. Doe"'s dot), or one quoted
# string without backslashes (its content is kept as is, inner whitespace included).
_WORD = rf"{_ATEXT}[A-Za-z0-9!#$%&'*+\-/=?^_`{{|}}~.]*"
_PHRASE = rf"{_WORD}(?:[ \t]+{_WORD})*"
_QUOTED = r'"([ \t!#-\[\]-~]*)"'
_MAILBOX = re.compile(
    rf"[ \t]*(?:{_ADDR_SPEC}|(?:({_PHRASE})|{_QUOTED})?[ \t]*<{_ADDR_SPEC}>)[ \t]*(,|$)")
_PLAIN_UNSTRUCTURED = re.compile(r"[\t -~]*")
# MIME tokens without RFC 2231's `*'%`, and quoted values without backslashes.
_TOKEN = r"[A-Za-z0-9!#$&+\-.^_`{|}~]+"
_MIME_VALUE = {"content-type": re.compile(rf"[ \t]*({_TOKEN})/({_TOKEN})[ \t]*"),
               "content-disposition": re.compile(rf"[ \t]*({_TOKEN})()[ \t]*")}
_MIME_PARAM = re.compile(rf';[ \t]*({_TOKEN})[ \t]*=[ \t]*(?:({_TOKEN})|"([\t !#-\[\]-~]*)")[ \t]*')
_UNFOLD = re.compile(r"\r?\n(?=[ \t])")
_LINESEP = re.compile(r"\n|\r")  # what policy.header_fetch_parse strips; splitlines() would take more
_SURROGATE = re.compile("[\udc80-\udcff]")
_CACHE_CHARS = 1024  # longer values (huge recipient lists) are parsed every time rather than kept
_CACHE_SIZE = 512  # per kind of header; a few hundred KiB at most

_classes: dict[str, type] = {}

Index = dict[str, tuple[str, str]]  # lowercased header name → (name, value) of its first occurrence


def first_occurrences(headers: list[tuple[str, str]]) -> Index:
    """Each header's first occurrence by lowercased name: one pass, then O(1) lookups per field."""
    index: Index = {}
    for key, value in headers:
        index.setdefault(key.lower(), (key, value))
    return index


def raw(index: Index, name: str) -> str | None:
    """The first `name` header's value unfolded, stripped and surrogate-cleaned, not decoded; None if absent."""
    return clean(_UNFOLD.sub("", index[name][1])).strip() if name in index else None


def clean(text: str | None) -> str | None:
    """Surrogate-escaped raw bytes (8-bit headers) → UTF-8, else U+FFFD, as the stdlib does for str(header)."""
    if text is None or text.isascii() or not _SURROGATE.search(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def fetch(name: str, value: str):
    """`policy.default.header_fetch_parse(name, value)`, without building a new header class per call.

    Raises whatever the stdlib raises on garbage (IndexError, AttributeError…): callers guard.
    """
    key = name.lower()
    cls = _classes.get(key)
    if cls is None:  # HeaderRegistry.__getitem__ makes a fresh subclass each time; one per name is enough
        cls = _classes[key] = email_policy.default.header_factory[key]
    return cls(name, _LINESEP.sub("", value))


# --- addresses (From, To, Cc, Bcc, Reply-To) ------------------------------------------------------------

def stdlib_addresses(value: str) -> list[dict]:
    """Mailboxes with a domain, as the stdlib parses them; groups flattened. Raises on unparsable values."""
    return [{"email": clean(a.addr_spec), "name": clean(a.display_name) or None}
            for a in fetch("To", value).addresses if a.username and a.domain]


def fast_addresses(value: str) -> list[dict] | None:
    """The same list as `stdlib_addresses` for a plain ASCII address list, or None: not plain, ask the stdlib."""
    value = _LINESEP.sub("", value)
    if not value.isascii() or "=?" in value or not value.strip(" \t"):
        return None
    found, pos, end = [], 0, len(value)
    while pos < end:
        match = _MAILBOX.match(value, pos)
        if match is None or (match.group(7) == "," and match.end() == end):
            return None  # a trailing comma: the stdlib copes, but let it
        if match.group(3) and value[match.end(3) - 1:match.end(3) + 1] == ".<":
            return None  # "J.<a@b>" makes the stdlib raise AttributeError: it must stay that way
        bare_local, bare_domain, phrase, quoted, local, domain = match.groups()[:6]
        if bare_local is not None:
            found.append({"email": f"{bare_local}@{bare_domain}", "name": None})
        else:
            name = " ".join(phrase.split()) if phrase is not None else quoted  # words: one space between
            found.append({"email": f"{local}@{domain}", "name": name or None})
        pos = match.end()
    return found


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _addresses(value: str) -> tuple[tuple[str, str | None], ...]:
    found = fast_addresses(value)
    return tuple((a["email"], a["name"]) for a in (stdlib_addresses(value) if found is None else found))


def addresses(value: str) -> list[dict]:
    """Mailboxes with a domain (`{"email", "name"}`, fresh dicts), exactly as the stdlib's default
    policy reads them; groups flattened. Raises on values the stdlib cannot parse."""
    pairs = _addresses(value) if len(value) <= _CACHE_CHARS else _addresses.__wrapped__(value)
    return [{"email": email, "name": name} for email, name in pairs]


# --- unstructured (Subject, encoded filenames) ----------------------------------------------------------

def stdlib_unstructured(value: str) -> str:
    """A Subject-like header decoded (RFC 2047) by the stdlib. Raises on garbage."""
    return clean(str(fetch("Subject", value)))


def fast_unstructured(value: str) -> str | None:
    """The same text for printable ASCII without encoded-words (it is kept as is), or None: ask the stdlib."""
    value = _LINESEP.sub("", value)
    if "=?" in value or not _PLAIN_UNSTRUCTURED.fullmatch(value):
        return None
    return value


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _unstructured(value: str) -> str:
    found = fast_unstructured(value)
    return stdlib_unstructured(value) if found is None else found


def unstructured(value: str) -> str:
    """A Subject-like header decoded (RFC 2047) exactly as the stdlib's default policy does. Raises on garbage."""
    return _unstructured(value) if len(value) <= _CACHE_CHARS else _unstructured.__wrapped__(value)


# --- Content-Type / Content-Disposition ------------------------------------------------------------------

def stdlib_mime(name: str, value: str) -> tuple[str | None, dict[str, str]]:
    """(content type or disposition, params) as the stdlib's default policy reads them. Raises on garbage."""
    header = fetch(name, value)
    kind = header.content_type if name.lower() == "content-type" else header.content_disposition
    return kind, dict(header.params)


def fast_mime(name: str, value: str) -> tuple[str, dict[str, str]] | None:
    """The same as `stdlib_mime` for a plain ASCII Content-Type/-Disposition, or None: ask the stdlib."""
    value = _LINESEP.sub("", value)
    head = _MIME_VALUE[name.lower()].match(value) if value.isascii() and "=?" not in value else None
    if head is None:
        return None
    kind = f"{head.group(1)}/{head.group(2)}" if head.group(2) else head.group(1)
    params: dict[str, str] = {}
    pos, end = head.end(), len(value)
    while pos < end:
        match = _MIME_PARAM.match(value, pos)
        if match is None or match.group(1).lower() in params:
            return None  # anything unusual, a repeated parameter included: the stdlib's rules apply
        token, quoted = match.group(2, 3)
        params[match.group(1).lower()] = token if token is not None else quoted
        pos = match.end()
    return kind.lower(), params


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _mime(name: str, value: str) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    kind, params = fast_mime(name, value) or stdlib_mime(name, value)
    return kind, tuple(params.items())


def mime(name: str, value: str) -> tuple[str | None, dict[str, str]]:
    """Content-Type (name "content-type") or Content-Disposition as (type or disposition, params), exactly
    as the stdlib's default policy reads them, RFC 2231 and 2047 included. Raises on garbage."""
    key = name.lower()
    kind, params = _mime(key, value) if len(value) <= _CACHE_CHARS else _mime.__wrapped__(key, value)
    return kind, dict(params)

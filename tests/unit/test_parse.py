"""Incoming mail parsing: the hand-written corpus through email_from_mime and, as Gmail would serve it,
through email_from_gmail; both must agree with what the stdlib (policy.default) decodes."""
from __future__ import annotations

import base64
import email
import json
import random
from email import policy
from pathlib import Path

import pytest

from mailbridge.core import headers
from mailbridge.core.parse import EMAIL_FIELDS, decode_text, email_from_gmail, email_from_mime, find_part

CORPUS = Path(__file__).parent / "corpus"
FILES = sorted(p.name for p in CORPUS.glob("*.eml"))
SANS_STDLIB = object()  # the stdlib cannot decode this body: the expectation below is the truth

# What each file must yield beyond "the same as the stdlib": the awkward facts, written down by hand.
EXPECTED = {
    "latin1_qp.eml": {"subject": "Café crème à midi ?", "from_name": "François Lefèvre",
                      "received_at": "2026-02-03T08:15:02Z", "sent_at": "2026-02-03T08:14:58Z"},
    "windows1252_8bit.eml": {"subject": "Price €100 – “final”",
                             "text": "The price is €100 – “final” offer… don’t wait.\n"},
    "koi8r_base64.eml": {"subject": "Отчёт за квартал", "from_name": "Иван Петров"},
    "iso2022jp_split_subject.eml": {"subject": "会議の議事録について（第二回）のご案内",
                                    "from_name": "山田太郎"},
    "gb2312_html_only.eml": {"subject": "你好，世界", "text": None, "snippet": "你好，韩梅梅！ 明天见。"},
    "unknown_charset.eml": {"subject": "Hello there",
                            "text": "Naïve café – the charset label is made up, the bytes are UTF-8.\n"},
    "encoded_words.eml": {"subject": "🎉 Party time: été 2026 —  plain words 😂",
                          "in_reply_to": "<parent.1@example.com>",
                          "references": ["<root.1@example.com>", "<parent.1@example.com>"]},
    "rfc2231_filenames.eml": {"attachments": [
        ("1", "résumé très long nom de fichier – version finale.pdf", "application/pdf", False),
        ("2", "données été.xls", "application/vnd.ms-excel", False),
        ("3", "Фото моря.jpg", "image/jpeg", False),
        ("4", 'notes "quoted".txt', "text/plain", False)]},
    "nested_mixed_alternative_related.eml": {"importance": "low", "attachments": [
        ("0.1.1", None, "image/png", True), ("1", "report.pdf", "application/pdf", False)]},
    "attachments_without_filenames.eml": {"attachments": [
        ("1", None, "application/octet-stream", False), ("2", None, "image/png", False),
        ("3", None, "text/csv", False), ("4", None, "image/gif", True)]},
    "forwarded_rfc822.eml": {"text": "FYI, see the attached message.", "html": None,
                             "attachments": [("1", "original.eml", "message/rfc822", False)]},
    "malformed_headers.eml": {"from": None, "to": [{"email": "ok@example.com", "name": None}], "cc": [], "bcc": [],
                              "reply_to": [], "sent_at": None, "message_id": "<no-angle-brackets@example.com>",
                              "in_reply_to": None, "importance": "high",
                              "references": ["<valid.ref@example.com>", "<other.ref@example.com>"]},
    "missing_date_subject.eml": {"subject": None, "sent_at": None, "message_id": None},
    "eightbit_no_charset.eml": {"subject": "Grüße aus Köln", "from_name": "Jörg Straße",
                                "text": "Schöne Grüße – kein Zeichensatz angegeben.\n"},
    "base64_utf8_alternative.eml": {"text": "Grüße ✓\nZweite Zeile\n", "importance": "low"},
    "bare_lf.eml": {"text": "Line one.\nLine two.", "sent_at": "2026-02-16T03:00:00Z"},
    "html_only_priority.eml": {"text": None, "importance": "high", "snippet": "Disk /var is at 97%."},
}


def sanitize(value):
    """The stdlib keeps undecodable header bytes as surrogates in some places; it shows them as UTF-8."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value


def leaves(part, part_id=""):
    """{partId: part} numbered as Gmail numbers them; an attached message is one leaf."""
    if part.get_content_maintype() == "multipart" and isinstance(part.get_payload(), list):
        found = {}
        for index, child in enumerate(part.get_payload()):
            found.update(leaves(child, f"{part_id}.{index}" if part_id else str(index)))
        return found
    return {part_id: part}


def stdlib_view(raw: bytes) -> dict:
    """What the stdlib's default policy decodes for the fields we compare."""
    msg = email.message_from_bytes(raw, policy=policy.default)

    def header(name):
        try:
            return msg[name]
        except Exception:  # e.g. IndexError on "Cc: a@"; our parser must answer [] there
            return None

    def addresses(name):
        value = header(name)
        return [{"email": sanitize(a.addr_spec), "name": sanitize(a.display_name) or None}
                for a in (value.addresses if value is not None else ()) if a.username and a.domain]

    def body(kind):
        part = msg.get_body((kind,))
        if part is None:
            return None
        try:
            content = part.get_content()
        except LookupError:
            return SANS_STDLIB
        return SANS_STDLIB if "\ufffd" in content else content.replace("\r\n", "\n")

    subject = header("subject")
    senders = addresses("from")
    return {
        "subject": sanitize(str(subject)) if subject is not None else None,
        "from": senders[0] if senders else None,
        "to": addresses("to"), "cc": addresses("cc"), "bcc": addresses("bcc"), "reply_to": addresses("reply-to"),
        "text": body("plain"), "html": body("html"),
        "filenames": {pid: p.get_filename() for pid, p in leaves(msg).items()},
    }


def gmail_resource(raw: bytes, *, gmail_decodes_filenames: bool = True) -> dict:
    """The corpus message the way Gmail's users.messages.get(format=full) serves it."""
    msg = email.message_from_bytes(raw, policy=policy.default)

    def node(part, part_id):
        ctype = part.get_content_type()
        out = {"partId": part_id, "mimeType": ctype, "filename": "",
               "headers": [{"name": k, "value": sanitize(v)} for k, v in part.raw_items()]}
        if part.get_content_maintype() == "multipart" and isinstance(part.get_payload(), list):
            out["body"] = {"size": 0}
            out["parts"] = [node(c, f"{part_id}.{i}" if part_id else str(i))
                            for i, c in enumerate(part.get_payload())]
            return out
        filename = part.get_filename()
        if filename and gmail_decodes_filenames:
            out["filename"] = filename
        if ctype.startswith("message/"):
            data = part.get_payload(0).as_bytes(policy=policy.compat32)
            out["parts"] = [node(part.get_payload(0), f"{part_id}.0")]  # Gmail shows the inner tree too
        else:
            data = part.get_payload(decode=True) or b""
        if part.get_content_maintype() == "text" and not filename:
            out["body"] = {"size": len(data), "data": base64.urlsafe_b64encode(data).decode().rstrip("=")}
        else:
            out["body"] = {"size": len(data), "attachmentId": f"ANGjdJ_{part_id or 'root'}_unstable"}
        return out

    return {"id": "18c0ffee", "threadId": "18c0ff00", "labelIds": ["INBOX", "UNREAD", "CATEGORY_UPDATES"],
            "snippet": "Gmail&#39;s own snippet", "internalDate": "1770112502000", "payload": node(msg, "")}


def from_mime(raw: bytes, **kwargs) -> dict:
    return email_from_mime(raw, id="m365:c1:AAMk", thread_id="m365:c1:conv", connection_id="c1",
                           provider="microsoft", **kwargs)


def read(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def check_against_stdlib_and_expectations(name: str, out: dict) -> None:
    view = stdlib_view(read(name))
    expected = EXPECTED[name]
    assert list(out) == list(EMAIL_FIELDS)
    json.dumps(out)  # serialisable: no bytes, no lone surrogates slipping through as objects
    for field in ("subject", "from", "to", "cc", "bcc", "reply_to"):
        assert out[field] == view[field], field
    for field in ("text", "html"):
        if view[field] is SANS_STDLIB:
            assert field in expected, f"{name}: the stdlib cannot decode {field}; write the truth in EXPECTED"
        else:
            assert out[field] == view[field], field
    for attachment in out["attachments"]:
        assert attachment["filename"] == view["filenames"][attachment["id"]]
    for field, value in expected.items():
        if field == "from_name":
            assert out["from"]["name"] == value
        elif field == "attachments":
            assert [(a["id"], a["filename"], a["content_type"], a["is_inline"]) for a in out["attachments"]] == value
        elif field == "snippet" and out["provider"] == "google":
            assert out[field] == "Gmail's own snippet"  # Gmail's, HTML-unescaped, not ours
        elif field != "received_at":
            assert out[field] == value, field
    assert out["has_attachments"] == any(not a["is_inline"] for a in out["attachments"])


def test_every_corpus_file_has_expectations():
    assert set(FILES) == set(EXPECTED)


@pytest.mark.parametrize("name", FILES)
def test_email_from_mime_matches_the_stdlib_on_the_corpus(name):
    out = from_mime(read(name))
    check_against_stdlib_and_expectations(name, out)
    if "received_at" in EXPECTED[name]:
        assert out["received_at"] == EXPECTED[name]["received_at"]


@pytest.mark.parametrize("decodes", [True, False], ids=["gmail-filenames", "header-filenames"])
@pytest.mark.parametrize("name", FILES)
def test_email_from_gmail_matches_the_stdlib_on_the_corpus(name, decodes):
    out = email_from_gmail(gmail_resource(read(name), gmail_decodes_filenames=decodes), connection_id="c1",
                           include_body=True)
    check_against_stdlib_and_expectations(name, out)


@pytest.mark.parametrize("name", FILES)
def test_gmail_and_mime_paths_agree_field_for_field(name):
    mime_out = from_mime(read(name))
    gmail_out = email_from_gmail(gmail_resource(read(name)), connection_id="c1", include_body=True)
    for field in ("message_id", "subject", "from", "to", "cc", "bcc", "reply_to", "text", "html", "sent_at",
                  "importance", "has_attachments", "attachments", "in_reply_to", "references"):
        assert gmail_out[field] == mime_out[field], field


def test_email_from_gmail_maps_ids_labels_dates_and_snippet():
    out = email_from_gmail(gmail_resource(read("nested_mixed_alternative_related.eml")), connection_id="conn_1",
                           include_body=False)
    assert out["id"] == "google:conn_1:18c0ffee" and out["thread_id"] == "google:conn_1:18c0ff00"
    assert out["connection_id"] == "conn_1" and out["provider"] == "google"
    assert out["labels"] == ["INBOX", "UNREAD", "CATEGORY_UPDATES"] and out["is_read"] is False
    assert out["received_at"] == "2026-02-03T09:55:02Z" and out["sent_at"] == "2026-02-11T15:45:00Z"
    assert out["snippet"] == "Gmail's own snippet"
    assert out["text"] is None and out["html"] is None  # include_body=False
    assert [a["id"] for a in out["attachments"]] == ["0.1.1", "1"]  # partIds, not Gmail's attachmentIds
    assert out["attachments"][0]["content_id"] == "logo@example.com"


def test_email_from_gmail_read_message_has_no_unread_label():
    resource = gmail_resource(read("bare_lf.eml"))
    resource["labelIds"] = ["INBOX"]
    assert email_from_gmail(resource, connection_id="c", include_body=True)["is_read"] is True


def test_email_from_gmail_metadata_format_leaves_bodies_and_attachments_unknown():
    resource = {"id": "1", "threadId": "1", "labelIds": ["INBOX"], "snippet": "Hi", "internalDate": "0",
                "payload": {"headers": [{"name": "Subject", "value": "=?UTF-8?Q?Caf=C3=A9?="},
                                        {"name": "From", "value": "=?UTF-8?B?QW5uYQ==?= <ann@example.com>"}]}}
    out = email_from_gmail(resource, connection_id="c", include_body=True)
    assert out["subject"] == "Café" and out["from"] == {"email": "ann@example.com", "name": "Anna"}
    assert out["text"] is None and out["attachments"] is None and out["has_attachments"] is None
    assert out["received_at"] == "1970-01-01T00:00:00Z"


@pytest.mark.parametrize("resource", [
    {}, {"id": "x"}, {"id": "x", "payload": None}, {"id": "x", "payload": {"headers": "nope", "parts": "nope"}},
    {"id": "x", "internalDate": "soon", "labelIds": [], "payload": {"mimeType": "multipart/mixed", "parts": [
        None, {"partId": "0", "mimeType": "text/plain", "body": {"data": "!!!not base64!!!", "size": "big"}},
        {"partId": "1", "mimeType": None, "body": {"attachmentId": "A"},
         "headers": [{"name": "Content-Disposition", "value": "attachment; filename*=x''%ZZ"}]}]}},
])
def test_email_from_gmail_never_raises_on_malformed_resources(resource):
    out = email_from_gmail(resource, connection_id="c", include_body=True)
    assert list(out) == list(EMAIL_FIELDS)
    json.dumps(out)


@pytest.mark.parametrize("raw", [b"", b"\x00\xff\xfe", b"Subject: =?utf-8?B?####?=\r\n\r\n",
                                 b"Content-Type: multipart/mixed\r\n\r\nno boundary at all",
                                 b"Content-Type: multipart/mixed; boundary=x\r\n\r\n"
                                 b"--x\r\nContent-Transfer-Encoding: base64\r\n\r\n@@@\r\n",
                                 b"From: a@\r\nTo: ,,,@@@<<<\r\nDate: 99 Foo 99999 99:99\r\n\r\nx",
                                 b"Subject: ok\r\nContent-Type: text/plain; name*\r\n\r\nx"])  # the stdlib's parser raises
def test_email_from_mime_never_raises_on_garbage(raw):
    out = from_mime(raw)
    assert list(out) == list(EMAIL_FIELDS)
    json.dumps(out)


def test_email_from_mime_passes_through_what_the_caller_knows():
    out = from_mime(read("bare_lf.eml"), labels=("Inbox",), is_read=True, received_at=1770112502.9,
                    include_body=False)
    assert (out["id"], out["thread_id"], out["connection_id"], out["provider"]) == (
        "m365:c1:AAMk", "m365:c1:conv", "c1", "microsoft")
    assert out["labels"] == ["Inbox"] and out["is_read"] is True
    assert out["received_at"] == "2026-02-03T09:55:02Z"
    assert out["text"] is None and out["html"] is None and out["snippet"] == "Line one. Line two."


def test_find_part_finds_nested_parts_by_part_id():
    payload = gmail_resource(read("nested_mixed_alternative_related.eml"))["payload"]
    assert find_part(payload, "0.1.1")["mimeType"] == "image/png"
    assert find_part(payload, "1")["filename"] == "report.pdf"
    assert find_part(payload, "")["mimeType"] == "multipart/mixed"
    assert find_part(payload, "7") is None and find_part(None, "1") is None


@pytest.mark.parametrize("data, charset, expected", [
    ("é".encode("latin-1"), "iso-8859-1", "é"), (b"\x93hi\x94", "ISO-8859-1", "“hi”"),
    ("中".encode("gb18030"), "gb2312", "中"), ("é".encode(), None, "é"), (b"caf\xe9", "us-ascii", "café"),
    ("é".encode(), "x-nonsense", "é"), (b"caf\xe9", "x-nonsense", "café"), (b"\xff\xfe", "utf-8", "\ufffd\ufffd"),
    ("ж".encode("koi8-r"), '"koi8-r"', "ж"),
])
def test_decode_text_falls_back_sanely_and_never_raises(data, charset, expected):
    assert decode_text(data, charset) == expected


# --- core/headers.py: the fast paths must give exactly what the stdlib gives --------------------------------
ADDRESS_HEADERS = ("from", "to", "cc", "bcc", "reply-to", "sender", "resent-to")


def stdlib_answer(kind: str, value: str, name: str = ""):
    """The truth, straight from policy.default (not through headers.fetch): the value, or the exception type."""
    try:
        if kind == "addresses":
            return [{"email": sanitize(a.addr_spec), "name": sanitize(a.display_name) or None}
                    for a in policy.default.header_fetch_parse("To", value).addresses if a.username and a.domain]
        if kind == "unstructured":
            return sanitize(str(policy.default.header_fetch_parse("Subject", value)))
        header = policy.default.header_fetch_parse(name, value)
        kind_value = header.content_type if name.lower() == "content-type" else header.content_disposition
        return kind_value, dict(header.params)
    except Exception as exc:  # the stdlib raises on some garbage; ours must raise too (callers turn it into [])
        return type(exc)


def ours(kind: str, value: str, name: str = ""):
    """(the public function's answer or exception type, the fast path's answer or None)."""
    public = {"addresses": headers.addresses, "unstructured": headers.unstructured}.get(kind)
    fast = {"addresses": headers.fast_addresses, "unstructured": headers.fast_unstructured}.get(kind)
    try:
        answer = public(value) if public else headers.mime(name, value)
    except Exception as exc:
        answer = type(exc)
    return answer, (fast(value) if fast else headers.fast_mime(name, value))


def assert_same_as_stdlib(kind: str, value: str, name: str = "") -> bool:
    """Public answer == stdlib; the fast path, when it answers, too. True if the fast path answered."""
    truth = stdlib_answer(kind, value, name)
    answer, fast = ours(kind, value, name)
    assert answer == truth, (kind, name, value)
    if fast is not None:
        assert fast == truth, (kind, name, value)
    return fast is not None


def corpus_header_values(name: str):
    """(kind, header name, value) for every header we decode, from the raw file and from Gmail's view of it."""
    msg = email.message_from_bytes(read(name), policy=policy.default)
    items = [(k, v) for part in msg.walk() for k, v in part.raw_items()]

    def walk(node):
        yield node
        for child in node.get("parts") or []:
            yield from walk(child)
    items += [(h["name"], h["value"]) for node in walk(gmail_resource(read(name))["payload"]) for h in node["headers"]]
    for key, value in items:
        low = key.lower()
        if low in ADDRESS_HEADERS:
            yield "addresses", key, value
        elif low == "subject":
            yield "unstructured", key, value
        elif low in ("content-type", "content-disposition"):
            yield "mime", key, value


@pytest.mark.parametrize("name", FILES)
def test_header_fast_paths_match_the_stdlib_on_every_corpus_header(name):
    checked = 0
    for kind, key, value in corpus_header_values(name):
        assert_same_as_stdlib(kind, value, key)
        checked += 1
    assert checked >= 3


TRICKY_ADDRESSES = [
    "=?UTF-8?Q?Ren=C3=A9e?= =?UTF-8?B?IETDvHJy?= <renee@example.com>", '"=?utf-8?q?J=C3=BCrgen?=" <j@example.de>',
    '"Last, First" <first.last@example.com>, plain@example.com', '"a\\"b" <q@example.com>', '"a\\\\b" <q@example.com>',
    "plain@example.com (a comment)", "(c) Ann <ann@example.com>", "Ann (x) Lee <ann@example.com>",
    "undisclosed-recipients:;", "team: a@example.com, b@example.com;, c@example.com", "a@", "<>", "@", "",
    "   ", ",", "a@example.com,", ",a@example.com", "a@example.com,,b@example.com", "Jörg Straße <joerg@example.de>",
    "jörg@exämple.de", "\udcc3\udca9 <x@example.com>", "J.<a@example.com>", "J. Doe <j@example.com>",
    "Mr. <a@example.com>", ". <a@example.com>", "a..b@example.com", "a@example.com.", "a@[127.0.0.1]",
    "a @ example.com", '"a b"@example.com', "a@b@c", "Ann <a@b> Lee", "a@b <c@d>", "<a@b> <c@d>",
    "Ann Lee\r\n <ann@example.com>", "Ann\t\tLee <ann@example.com>", '" spaced  out " <s@example.com>',
    '"" <e@example.com>', "<@route:a@example.com>", "this is ;; garbage <<>> ,, ok@example.com",
    '"Unbalanced Quote <broken@example.com>', "Ann <a@example.com", "a\x00b@example.com", "=?x?q?y?= <z@example.com>",
]
TRICKY_SUBJECTS = [
    "", "  Re: hi  ", "a\tb", "=?UTF-8?Q?Caf=C3=A9?=", "=?utf-8?b?8J+OiQ==?= =?utf-8?q?_x?=", "x =?", "=?bad",
    "Grüße", "\udcc3\udca9", "line\r\n folded", "a\x00b", "=?x-made-up?Q?Hello?=", "?= =? ==??", "\x7f",
]
TRICKY_MIME = [
    ("Content-Type", 'text/plain; charset="UTF-8"'), ("Content-Type", "text/plain;charset=utf-8;format=flowed"),
    ("Content-Type", " Text/HTML ; Charset = \"ISO-8859-1\" "), ("Content-Type", 'text/plain; name="a;b.txt"'),
    ("Content-Type", 'text/plain; charset="a"; Charset="b"'), ("Content-Type", 'text/plain; name="a"; name="b"'),
    ("Content-Type", "text/plain;"),
    ("Content-Type", 'application/pdf; name="=?utf-8?q?r=C3=A9sum=C3=A9.pdf?="'), ("Content-Type", "text"),
    ("Content-Type", "text/plain; name*=utf-8''r%C3%A9sum%C3%A9.pdf"), ("Content-Type", 'text/plain; name="a\\"b"'),
    ("Content-Type", "text/plain; name*0=a; name*1=b"), ("Content-Type", ""), ("Content-Type", "/"),
    ("Content-Type", "text/plain (comment); charset=utf-8"), ("Content-Type", 'text/plain; name="Фото.jpg"'),
    ("Content-Disposition", 'attachment; filename="a b  c.pdf"; size=12'), ("Content-Disposition", "INLINE"),
    ("Content-Disposition", "attachment; filename*=iso-8859-1'fr'donn%E9es.xls"), ("Content-Disposition", ";;"),
    ("Content-Disposition", 'attachment; filename="x'), ("Content-Disposition", "attachment; filename=a/b"),
]


@pytest.mark.parametrize("value", TRICKY_ADDRESSES)
def test_address_fast_path_matches_the_stdlib_on_tricky_values(value):
    assert_same_as_stdlib("addresses", value)


@pytest.mark.parametrize("value", TRICKY_SUBJECTS)
def test_subject_fast_path_matches_the_stdlib_on_tricky_values(value):
    assert_same_as_stdlib("unstructured", value)


@pytest.mark.parametrize("name, value", TRICKY_MIME)
def test_mime_fast_path_matches_the_stdlib_on_tricky_values(name, value):
    assert_same_as_stdlib("mime", value, name)


@pytest.mark.parametrize("kind, name, value, expected", [
    ("addresses", "", "Ann Lee <ann@example.com>", [{"email": "ann@example.com", "name": "Ann Lee"}]),
    ("addresses", "", ' "Lee, Bo"  <bo@example.com> , x.y+z@mail.example.org',
     [{"email": "bo@example.com", "name": "Lee, Bo"}, {"email": "x.y+z@mail.example.org", "name": None}]),
    ("addresses", "", "John Q.  Public <jqp@example.com>", [{"email": "jqp@example.com", "name": "John Q. Public"}]),
    ("addresses", "", "<o'neil@example.com>", [{"email": "o'neil@example.com", "name": None}]),
    ("unstructured", "", "Re: [team] lunch?\r\n at 12", "Re: [team] lunch? at 12"),
    ("mime", "Content-Type", 'Text/Plain; charset="UTF-8"', ("text/plain", {"charset": "UTF-8"})),
    ("mime", "Content-Disposition", 'attachment; filename="report 2026.pdf"',
     ("attachment", {"filename": "report 2026.pdf"})),
])
def test_plain_values_take_the_fast_path(kind, name, value, expected):
    assert assert_same_as_stdlib(kind, value, name)  # the fast path answered, and agreed with the stdlib
    assert ours(kind, value, name)[0] == expected


FUZZ_PIECES = ["Ann", "J.", ".", "@", "<", ">", ",", " ", "\t", '"', "\\", "(", ")", ":", ";", "[", "]", "=?",
               "=?utf-8?q?x_y?=", "?=", "é", "\r\n ", "x.y", "example.com", "o'n", "!#$%&'*+-/=?^_`{|}~", "", "a@b",
               "<a@b.c>", "Lee, Bo", "/", "=", "charset", "name*", "'", "%41", "text/plain", "attachment", "\x00"]


def test_fast_paths_match_the_stdlib_on_seeded_random_values():
    rng = random.Random(20260203)
    answered = 0
    for _ in range(3000):
        value = "".join(rng.choice(FUZZ_PIECES) for _ in range(rng.randint(1, 9)))
        answered += assert_same_as_stdlib("addresses", value)
        answered += assert_same_as_stdlib("unstructured", value)
        answered += assert_same_as_stdlib("mime", value, rng.choice(["Content-Type", "Content-Disposition"]))
    assert answered > 500  # the generator does reach the fast paths


def test_cached_answers_are_fresh_objects_each_time():
    first = headers.addresses("Ann <ann@example.com>")
    first[0]["name"] = "changed by a caller"
    first.append({"email": "extra@example.com", "name": None})
    assert headers.addresses("Ann <ann@example.com>") == [{"email": "ann@example.com", "name": "Ann"}]
    kind, params = headers.mime("Content-Type", 'text/plain; charset="UTF-8"')
    params["charset"] = "changed"
    assert headers.mime("Content-Type", 'text/plain; charset="UTF-8"') == ("text/plain", {"charset": "UTF-8"})


def test_long_values_are_parsed_without_the_cache_and_still_exactly():
    value = ", ".join(f"Person {n} <p{n}@example.com>" for n in range(100)) + ", =?utf-8?q?Z=C3=BC?= <z@example.com>"
    assert len(value) > 1024
    assert headers.addresses(value) == stdlib_answer("addresses", value)
    assert headers.addresses(value)[-1] == {"email": "z@example.com", "name": "Zü"}


@pytest.mark.parametrize("name, value", [("To", "Ann <a@example.com>"), ("Subject", "=?utf-8?q?x?="),
                                         ("Content-Type", "text/plain; charset=utf-8"), ("X-Odd", "a\r\nb")])
def test_fetch_is_header_fetch_parse(name, value):
    ours_header, theirs = headers.fetch(name, value), policy.default.header_fetch_parse(name, value)
    assert str(ours_header) == str(theirs) and ours_header.name == theirs.name
    assert type(ours_header).__mro__[1:] == type(theirs).__mro__[1:]

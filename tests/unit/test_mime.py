"""Outgoing MIME: built by mailbridge.core.mime, read back with the stdlib, and every refusal it must make."""
from __future__ import annotations

import email
import re
from email import policy

import pytest

from mailbridge.core import mime
from mailbridge.core.mime import (Address, Attachment, OutgoingMessage, build_mime, check_custom_header,
                                  check_header_value, forward_subject, parse_address, parse_address_list,
                                  reply_all_recipients, reply_references, reply_subject)
from mailbridge.core.parse import email_from_mime
from mailbridge.errors import InvalidRequestError, PayloadTooLargeError

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000")
GMAIL_ID = "<CAOW3M+pR0ZyH4bqLwE3VtQ_cQxK3Kf3nQHZ8vXG1Ff4Jjv8Qhw@mail.gmail.com>"  # ~70 chars, as Gmail's are


def full_message(**changes) -> OutgoingMessage:
    fields = dict(
        from_=Address("me@example.com", "Zoë Ünicode 😀"),
        to=[Address("ann@example.net", "Ann, the First"), Address("bob@example.org")],
        cc=[Address("carol@example.com", "Карол")],
        bcc=[Address("hidden@example.com")],
        reply_to=[Address("replies@example.com", "Replies")],
        subject="Quarterly 🎉 résumé — ready",
        text="Hello Ann,\nplain body.\n",
        html='<p>Hello <img src="cid:logo"></p>',
        headers={"X-Campaign": "7"},
        attachments=[Attachment("logo.png", PNG, "image/png", content_id="logo"),
                     Attachment("résumé été.pdf", b"%PDF-1.4 fake", "application/pdf")],
        in_reply_to=GMAIL_ID,
        references=["<root@example.com>", GMAIL_ID],
    )
    fields.update(changes)
    return OutgoingMessage(**fields)


def parsed(raw: bytes):
    return email.message_from_bytes(raw, policy=policy.default)


def structure(part) -> object:
    if part.is_multipart():
        return (part.get_content_type(), [structure(p) for p in part.iter_parts()])
    return part.get_content_type()


def test_build_mime_round_trips_every_field_through_the_stdlib():
    raw = build_mime(full_message())
    msg = parsed(raw)
    assert str(msg["Subject"]) == "Quarterly 🎉 résumé — ready"
    assert msg["From"].addresses[0].display_name == "Zoë Ünicode 😀"
    assert msg["From"].addresses[0].addr_spec == "me@example.com"
    assert [(a.display_name, a.addr_spec) for a in msg["To"].addresses] == [
        ("Ann, the First", "ann@example.net"), ("", "bob@example.org")]
    assert [a.display_name for a in msg["Cc"].addresses] == ["Карол"]
    assert [a.addr_spec for a in msg["Bcc"].addresses] == ["hidden@example.com"]
    assert [a.addr_spec for a in msg["Reply-To"].addresses] == ["replies@example.com"]
    assert msg["X-Campaign"] == "7"
    assert msg["In-Reply-To"] == GMAIL_ID
    assert msg["References"].split() == ["<root@example.com>", GMAIL_ID]
    assert re.fullmatch(r"<[^<>@\s]+@example\.com>", msg["Message-ID"])
    assert msg["Date"].datetime is not None
    assert msg["MIME-Version"] == "1.0"
    assert structure(msg) == ("multipart/mixed", [
        ("multipart/alternative", ["text/plain", ("multipart/related", ["text/html", "image/png"])]),
        "application/pdf"])
    assert msg.get_body(("plain",)).get_content() == "Hello Ann,\r\nplain body.\r\n"
    assert msg.get_body(("html",)).get_content().strip() == '<p>Hello <img src="cid:logo"></p>'
    inline = next(p for p in msg.walk() if p.get_content_type() == "image/png")
    assert inline["Content-ID"] == "<logo>" and inline.get_content_disposition() == "inline"
    assert inline.get_content() == PNG
    pdf = next(p for p in msg.walk() if p.get_content_type() == "application/pdf")
    assert pdf.get_filename() == "résumé été.pdf" and pdf.get_content_disposition() == "attachment"
    assert pdf.get_content() == b"%PDF-1.4 fake"
    assert sum(1 for _ in msg.walk() if _["MIME-Version"]) == 1  # only the root says MIME-Version


def test_build_mime_encodes_headers_as_rfc2047_and_filenames_as_rfc2231():
    raw = build_mime(full_message())
    head, _, _ = raw.partition(b"\r\n\r\n")
    assert head.isascii()
    assert b"=?utf-8?" in head  # subject and display names as encoded-words
    assert b"filename*=utf-8''r%C3%A9sum%C3%A9%20%C3%A9t%C3%A9.pdf" in raw


def test_build_mime_uses_crlf_everywhere_and_no_bare_lf_or_cr():
    raw = build_mime(full_message(text="line one\nline two\rline three\r\n" + "x" * 2000))
    assert b"\r\n" in raw
    assert re.search(rb"(?<!\r)\n", raw) is None
    assert re.search(rb"\r(?!\n)", raw) is None
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_build_mime_keeps_long_message_ids_verbatim_instead_of_encoding_them():
    long_ref = "<" + "r" * 120 + "@example.com>"
    raw = build_mime(full_message(in_reply_to=long_ref, references=[long_ref, GMAIL_ID], message_id=GMAIL_ID))
    msg = parsed(raw)
    head = raw.split(b"\r\n\r\n")[0].decode("ascii")
    for name in ("Message-ID", "In-Reply-To", "References"):
        block = re.search(rf"^{name}:.*(?:\r\n[ \t].*)*", head, re.MULTILINE).group(0)
        assert "=?" not in block  # the default policy would have made encoded-words of these
    assert msg["In-Reply-To"] == long_ref
    assert msg["References"].split() == [long_ref, GMAIL_ID]
    assert msg["Message-ID"] == GMAIL_ID


def test_build_mime_text_only_is_a_single_text_plain_part():
    msg = parsed(build_mime(full_message(html=None, attachments=[])))
    assert structure(msg) == "text/plain"
    assert msg.get_content_charset() == "utf-8"


def test_build_mime_html_only_is_a_single_text_html_part():
    msg = parsed(build_mime(full_message(text=None, attachments=[])))
    assert structure(msg) == "text/html"


def test_build_mime_text_and_html_is_alternative():
    msg = parsed(build_mime(full_message(attachments=[])))
    assert structure(msg) == ("multipart/alternative", ["text/plain", "text/html"])


def test_build_mime_without_references_has_no_threading_headers_and_makes_an_id_per_call():
    message = full_message(in_reply_to=None, references=[])
    first, second = parsed(build_mime(message)), parsed(build_mime(message))
    assert first["In-Reply-To"] is None and first["References"] is None
    assert first["Message-ID"] != second["Message-ID"]


def test_build_mime_output_reads_back_through_our_own_parser():
    out = email_from_mime(build_mime(full_message()), id="i", thread_id="t", connection_id="c",
                          provider="google")
    assert out["subject"] == "Quarterly 🎉 résumé — ready"
    assert out["from"] == {"email": "me@example.com", "name": "Zoë Ünicode 😀"}
    assert out["bcc"] == [{"email": "hidden@example.com", "name": None}]
    assert out["text"] == "Hello Ann,\nplain body.\n"
    assert out["in_reply_to"] == GMAIL_ID
    assert out["references"] == ["<root@example.com>", GMAIL_ID]
    assert [(a["filename"], a["is_inline"], a["content_id"]) for a in out["attachments"]] == [
        ("logo.png", True, "logo"), ("résumé été.pdf", False, None)]


@pytest.mark.parametrize("value", ["a@x.com", "Name <a@x.com>", '"Last, First" <a@x.com>',
                                   "Jöhn Dœ 😀 <a@x.com>", "  a@x.com  "])
def test_parse_address_accepts_common_forms(value):
    address = parse_address(value, "to")
    assert address.email == "a@x.com"
    assert address.name in (None, "Name", "Last, First", "Jöhn Dœ 😀")


def test_parse_address_turns_unicode_domains_into_idna():
    assert parse_address("a@bücher.example", "to").email == "a@xn--bcher-kva.example"


@pytest.mark.parametrize("value", ["foo", "", "   ", "a@", "@x.com", "a@@x.com", "a@x", "Name <a@x.com",
                                   "a b@x.com", "a@x..com", "a@-x.com", "<>", "grp: a@x.com;",
                                   "a@x.com\r\nBcc: evil@x.com", "Evil\n <a@x.com>", "a@[1.2.3.4]", None, 7])
def test_parse_address_rejects_bad_values_naming_the_field(value):
    with pytest.raises(InvalidRequestError) as info:
        parse_address(value, "cc")
    assert info.value.field == "cc" and info.value.status == 422
    assert info.value.message.startswith("cc: ")


def test_parse_address_message_quotes_the_bad_value():
    with pytest.raises(InvalidRequestError, match=r"^to: 'foo' is not a valid email address$"):
        parse_address("foo", "to")


def test_parse_address_rejects_two_addresses_where_one_is_expected():
    with pytest.raises(InvalidRequestError, match="exactly one"):
        parse_address("a@x.com, b@x.com", "from")


def test_parse_address_list_takes_a_string_or_a_list():
    assert parse_address_list('"Last, First" <a@x.com>, b@y.com', "to") == [
        Address("a@x.com", "Last, First"), Address("b@y.com")]
    assert parse_address_list(["A <a@x.com>", "b@y.com"], "to") == [Address("a@x.com", "A"), Address("b@y.com")]
    assert parse_address_list(None, "cc") == [] and parse_address_list([], "cc") == []


def test_parse_address_list_rejects_101_recipients_naming_the_field():
    hundred = [f"user{i}@example.com" for i in range(100)]
    assert len(parse_address_list(hundred, "bcc")) == 100
    with pytest.raises(InvalidRequestError, match=r"^bcc: at most 100") as info:
        parse_address_list(hundred + ["one.more@example.com"], "bcc")
    assert info.value.field == "bcc"
    with pytest.raises(InvalidRequestError) as info:
        parse_address_list(", ".join(hundred + ["x@example.com"]), "to")
    assert info.value.field == "to"


def test_build_mime_rejects_101_recipients_in_one_field():
    many = [Address(f"u{i}@example.com") for i in range(101)]
    with pytest.raises(InvalidRequestError) as info:
        build_mime(full_message(cc=many))
    assert info.value.field == "cc"


@pytest.mark.parametrize("subject", ["Hi\r\nBcc: victim@example.com", "Hi\nthere", "Hi\rthere", "Hi\u2028there"])
def test_build_mime_rejects_line_breaks_in_the_subject(subject):
    with pytest.raises(InvalidRequestError) as info:
        build_mime(full_message(subject=subject))
    assert info.value.field == "subject"


@pytest.mark.parametrize("changes, field", [
    ({"from_": Address("me@example.com", "Me\r\nBcc: victim@example.com")}, "from"),
    ({"to": [Address("ann@example.net", "Ann\nX-Evil: 1")]}, "to"),
    ({"to": [Address("ann@example.net\r\nBcc: victim@example.com")]}, "to"),
    ({"reply_to": [Address("not-an-address")]}, "reply_to"),
    ({"headers": {"X-Campaign": "7\r\nBcc: victim@example.com"}}, "headers.X-Campaign"),
    ({"in_reply_to": "<a@b>\r\nBcc: victim@example.com"}, "in_reply_to"),
    ({"references": ["<ok@example.com>", "<a@b> <c@d>"]}, "references"),
    ({"message_id": "not an id"}, "message_id"),
    ({"attachments": [Attachment("a\r\n.pdf", b"x")]}, "attachments[0].filename"),
    ({"attachments": [Attachment("a.png", b"x", content_id="lo go")]}, "attachments[0].content_id"),
    ({"attachments": [Attachment("a.bin", b"x", "not a type")]}, "attachments[0].content_type"),
    ({"attachments": [Attachment("a.bin", b"x", "multipart/mixed")]}, "attachments[0].content_type"),
])
def test_build_mime_rejects_injection_and_garbage_naming_the_field(changes, field):
    with pytest.raises(InvalidRequestError) as info:
        build_mime(full_message(**changes))
    assert info.value.field == field
    assert "victim" not in info.value.message or "\n" not in info.value.message  # no raw line break echoed


@pytest.mark.parametrize("name", ["From", "to", "BCC", "Subject", "Date", "Message-ID", "MIME-Version",
                                  "Content-Type", "content-transfer-encoding", "In-Reply-To", "References"])
def test_custom_headers_may_not_override_structural_ones(name):
    with pytest.raises(InvalidRequestError) as info:
        build_mime(full_message(headers={name: "x"}))
    assert info.value.field == f"headers.{name}" and info.value.status == 422


@pytest.mark.parametrize("name", ["X Bad", "X:Bad", "", "X-Ünicode", "X-Bad\r\n"])
def test_custom_header_names_must_be_rfc5322_ftext(name):
    with pytest.raises(InvalidRequestError) as info:
        check_custom_header(name, "v")
    assert info.value.field == f"headers.{name}"


def test_custom_header_with_unicode_value_is_encoded_and_kept():
    check_custom_header("X-Note", "héllo")
    msg = parsed(build_mime(full_message(headers={"X-Note": "héllo", "X-Campaign": "7"})))
    assert str(msg["X-Note"]) == "héllo"


def test_check_header_value_names_the_given_field():
    check_header_value("Subject", "fine", "subject")
    with pytest.raises(InvalidRequestError) as info:
        check_header_value("Subject", "a\x00b", "subject")
    assert info.value.field == "subject"


def test_build_mime_refuses_attachments_over_the_limit_before_encoding():
    big = Attachment("big.bin", b"\0" * (mime.MAX_MESSAGE_BYTES + 1))
    with pytest.raises(PayloadTooLargeError) as info:
        build_mime(full_message(attachments=[big]))
    assert info.value.status == 413


def test_build_mime_refuses_a_message_that_base64_pushes_over_the_limit():
    # 20 MiB of content is under the limit raw, but base64 makes it about 27 MiB on the wire.
    big = Attachment("big.bin", b"\x01" * (20 * 1024 * 1024))
    with pytest.raises(PayloadTooLargeError):
        build_mime(full_message(attachments=[big]))


def test_build_mime_accepts_a_message_just_under_the_limit():
    raw = build_mime(full_message(attachments=[Attachment("ok.bin", b"\x01" * (1024 * 1024))]))
    assert len(raw) < mime.MAX_MESSAGE_BYTES


@pytest.mark.parametrize("subject, expected", [
    ("Hello", "Re: Hello"), ("Re: Hello", "Re: Hello"), ("RE: Hello", "Re: Hello"), ("re:Hello", "Re: Hello"),
    ("Re: Re: RE: Hello", "Re: Hello"), ("Re[2]: Hello", "Re: Hello"), ("Re (3): Hello", "Re: Hello"),
    ("Fwd: Hello", "Re: Fwd: Hello"), ("Regarding: x", "Re: Regarding: x"), ("", "Re:"), (None, "Re:"),
])
def test_reply_subject_adds_re_exactly_once(subject, expected):
    assert reply_subject(subject) == expected


@pytest.mark.parametrize("subject, expected", [
    ("Hello", "Fwd: Hello"), ("Fwd: Hello", "Fwd: Hello"), ("FW: Hello", "Fwd: Hello"),
    ("fwd: FWD: Hello", "Fwd: Hello"), ("Re: Hello", "Fwd: Re: Hello"),
])
def test_forward_subject_adds_fwd_exactly_once(subject, expected):
    assert forward_subject(subject) == expected


def test_reply_references_keeps_the_chain_adds_the_original_and_drops_duplicates_and_junk():
    assert reply_references(["<a@x>", "b@x", "<a@x>", "junk with spaces", "<c@x>\r\nBcc: v@x"], "<d@x>") == [
        "<a@x>", "<b@x>", "<d@x>"]
    assert reply_references([], "d@x") == ["<d@x>"]
    assert reply_references(["<a@x>"], "<a@x>") == ["<a@x>"]


def addr(email_, name=None):
    return {"email": email_, "name": name}


def test_reply_all_goes_to_the_sender_and_copies_the_rest_without_me():
    original = {"from": addr("boss@example.com", "Boss"), "reply_to": [],
                "to": [addr("Me@Example.com"), addr("peer@example.com")],
                "cc": [addr("PEER@example.com"), addr("boss@example.com"), addr("other@example.com")]}
    to, cc = reply_all_recipients(original, "me@example.com")
    assert to == [Address("boss@example.com", "Boss")]
    assert cc == [Address("peer@example.com"), Address("other@example.com")]


def test_reply_all_prefers_reply_to():
    original = {"from": addr("noreply@example.com"), "reply_to": [addr("desk@example.com", "Desk")],
                "to": [addr("me@example.com")], "cc": []}
    to, cc = reply_all_recipients(original, "me@example.com")
    assert to == [Address("desk@example.com", "Desk")] and cc == []


def test_reply_all_to_my_own_message_goes_to_its_recipients():
    original = {"from": addr("me@example.com"), "reply_to": [], "to": [addr("a@example.com")],
                "cc": [addr("b@example.com")]}
    assert reply_all_recipients(original, "ME@example.com") == ([Address("a@example.com")],
                                                                [Address("b@example.com")])


def test_reply_all_to_a_note_to_myself_goes_to_me():
    original = {"from": addr("me@example.com"), "reply_to": [], "to": [addr("me@example.com")], "cc": []}
    assert reply_all_recipients(original, "me@example.com") == ([Address("me@example.com")], [])

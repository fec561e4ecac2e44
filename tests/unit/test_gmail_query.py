"""to_gmail_query: every SearchQuery filter in Gmail's syntax, user text always one quoted literal."""
from __future__ import annotations

import re

import pytest

from mailbridge.providers.base import SearchQuery
from mailbridge.providers.gmail_query import label_term, quote, to_gmail_query


def _phrases(query: str) -> list[str]:
    """The quoted phrases of a query, the way Gmail (no escapes inside quotes) reads them."""
    return re.findall(r'"([^"]*)"', query)


def _outside_quotes(query: str) -> str:
    return re.sub(r'"[^"]*"', '""', query)


def test_empty_query_is_empty_string():
    assert to_gmail_query(SearchQuery()) == ""


def test_every_filter_maps_to_gmail_syntax():
    query = SearchQuery(q="quarterly report", from_="boss@example.com", to="me@example.com",
                        subject="Q1 update", label="Work", unread=True, after=1700000000.0,
                        before=1700086400.0, has_attachment=True)
    assert to_gmail_query(query) == ('"quarterly report" from:"boss@example.com" to:"me@example.com" '
                                     'subject:"Q1 update" label:"Work" is:unread has:attachment '
                                     'after:1700000000 before:1700086400')


def test_false_booleans_map_to_the_negative_operators():
    assert to_gmail_query(SearchQuery(unread=False, has_attachment=False)) == "is:read -has:attachment"


def test_fractional_times_widen_the_range_never_narrow_it():
    assert to_gmail_query(SearchQuery(after=1700000000.9, before=1700000100.1)) == \
        "after:1700000000 before:1700000101"


def test_operator_text_in_q_stays_one_literal_phrase():
    query = to_gmail_query(SearchQuery(q="from:boss OR x"))
    assert query == '"from:boss OR x"'
    assert _outside_quotes(query) == '""'


@pytest.mark.parametrize("attack", [
    'x" OR from:boss "',
    'x\\" from:boss',
    '"" label:secret',
    'a"b"c" -in:trash',
    'line\r\nfrom:boss',
    'tab\there {from:a from:b}',
    '\\',
])
def test_quotes_backslashes_and_controls_cannot_break_out(attack):
    for query in (SearchQuery(q=attack), SearchQuery(subject=attack), SearchQuery(from_=attack),
                  SearchQuery(to=attack), SearchQuery(label=attack)):
        gmail_q = to_gmail_query(query)
        # Exactly one balanced phrase (or nothing): the text can never close it and add an operator.
        assert gmail_q.count('"') in (0, 2)
        assert "\\" not in gmail_q and "\r" not in gmail_q and "\n" not in gmail_q and "\t" not in gmail_q
        outside = _outside_quotes(gmail_q)
        assert outside in ("", '""', 'from:""', 'to:""', 'subject:""', 'label:""'), gmail_q


def test_embedded_quotes_are_replaced_by_spaces_and_collapsed():
    assert quote('say "hi"  there') == '"say hi there"'
    assert _phrases(to_gmail_query(SearchQuery(subject='a"b'))) == ["a b"]


def test_text_empty_after_cleaning_is_left_out():
    assert quote('" \\ "') is None
    assert to_gmail_query(SearchQuery(q='"', subject="\\", unread=True)) == "is:unread"


def test_non_ascii_text_is_kept():
    assert to_gmail_query(SearchQuery(subject="Grüße 東京")) == 'subject:"Grüße 東京"'


@pytest.mark.parametrize("label, term", [
    ("INBOX", "in:inbox"), ("inbox", "in:inbox"), ("SENT", "in:sent"), ("DRAFT", "in:drafts"),
    ("TRASH", "in:trash"), ("SPAM", "in:spam"), ("STARRED", "is:starred"), ("IMPORTANT", "is:important"),
    ("UNREAD", "is:unread"), ("CATEGORY_SOCIAL", "category:social"), ("CATEGORY_PERSONAL", "category:primary"),
])
def test_system_label_ids_map_to_their_operators(label, term):
    assert label_term(label) == term


def test_user_labels_are_quoted_names():
    assert label_term("Clients/ACME Corp") == 'label:"Clients/ACME Corp"'
    assert label_term('in:trash" OR "x') == 'label:"in:trash OR x"'

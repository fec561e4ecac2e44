"""Gmail's system labels, as labels.list answers them, and the rules for which ones a client may set."""
from __future__ import annotations

_HIDDEN = {"messageListVisibility": "hide", "labelListVisibility": "labelHide"}

SYSTEM_LABELS: list[dict] = [
    {"id": "CHAT", "name": "CHAT", **_HIDDEN, "type": "system"},
    {"id": "SENT", "name": "SENT", "type": "system"},
    {"id": "INBOX", "name": "INBOX", "type": "system"},
    {"id": "IMPORTANT", "name": "IMPORTANT", "messageListVisibility": "hide",
     "labelListVisibility": "labelShow", "type": "system"},
    {"id": "TRASH", "name": "TRASH", **_HIDDEN, "type": "system"},
    {"id": "DRAFT", "name": "DRAFT", "type": "system"},
    {"id": "SPAM", "name": "SPAM", **_HIDDEN, "type": "system"},
    {"id": "CATEGORY_FORUMS", "name": "CATEGORY_FORUMS", "type": "system"},
    {"id": "CATEGORY_UPDATES", "name": "CATEGORY_UPDATES", "type": "system"},
    {"id": "CATEGORY_PERSONAL", "name": "CATEGORY_PERSONAL", "type": "system"},
    {"id": "CATEGORY_PROMOTIONS", "name": "CATEGORY_PROMOTIONS", "type": "system"},
    {"id": "CATEGORY_SOCIAL", "name": "CATEGORY_SOCIAL", "type": "system"},
    {"id": "STARRED", "name": "STARRED", "type": "system"},
    {"id": "UNREAD", "name": "UNREAD", "type": "system"},
]
SYSTEM_IDS = {label["id"] for label in SYSTEM_LABELS}
# Gmail refuses to add or remove these through modify: they follow from sending and drafting.
NOT_MODIFIABLE = {"SENT", "DRAFT", "CHAT"}
# Hidden from messages.list/threads.list unless asked for (includeSpamTrash, labelIds, in:…).
SPAM_TRASH = {"SPAM", "TRASH"}


def user_label(label_id: str, name: str) -> dict:
    return {"id": label_id, "name": name, "messageListVisibility": "show",
            "labelListVisibility": "labelShow", "type": "user"}

"""The synced copy of a mailbox: stored emails (MESSAGES) and thread snapshots (THREADS), as core/read.py reads them.

Shapes are read.py's (its `?source=store` answers from them):
    MESSAGES[<connection id>:<gmail id>] = {tenant_id, connection_id, thread_id (public), received_at,
        received_ts, email (the email object, bodies included), stored_ts, source: "sync"}
    THREADS[<connection id>:<gmail thread id>] = {tenant_id, connection_id, thread_id (public),
        thread: {id, subject, message_count, participants, last_message_at, provider},
        message_keys (oldest first), synced_ts}
A snapshot made by a sync lists the messages the store holds (a live read of the thread fills in
older ones). Concurrent writers of one snapshot may drop a key until the next write: it is a cache.
"""
from __future__ import annotations

import json
from typing import Iterable, Mapping

from mailbridge import clock
from mailbridge.providers.base import LabelChange
from mailbridge.store.base import MESSAGES, THREADS, Store

# A Firestore document holds at most 1 MiB: bigger bodies are left out of the copy and the event.
MAX_EMAIL_BYTES = 700_000


def store_key(public_id: str) -> str:
    """`google:<conn>:<id>` → `<conn>:<id>`, the key of MESSAGES and THREADS."""
    return public_id.split(":", 1)[1]


def fit_email(email: dict) -> dict:
    """The email, without `html` (then `text`) when it would not fit in one document."""
    if len(json.dumps(email)) <= MAX_EMAIL_BYTES:
        return email
    trimmed = {**email, "html": None}
    return trimmed if len(json.dumps(trimmed)) <= MAX_EMAIL_BYTES else {**trimmed, "text": None}


def received_ts(email: dict) -> float:
    try:
        return clock.parse_rfc3339(email.get("received_at") or "")
    except ValueError:
        return 0.0


def newest_ts(emails: Iterable[dict]) -> float:
    return max((received_ts(e) for e in emails), default=0.0)


def store_emails(store: Store, connection: dict, emails: list[dict]) -> list[tuple[bool, bool]]:
    """Store each email create-if-absent and refresh the snapshots of their threads. Returns, per
    email, (created by this call, the stored copy was made by a sync). Idempotent."""
    now = clock.now()
    keys = [store_key(e["id"]) for e in emails]
    existing = store.get_many(MESSAGES, keys) if keys else {}
    outcomes = []
    for email, key in zip(emails, keys):
        if key in existing:
            outcomes.append((False, existing[key].get("source") == "sync"))
            continue
        doc = {"tenant_id": connection["tenant_id"], "connection_id": connection["id"],
               "thread_id": email.get("thread_id"), "received_at": email.get("received_at"),
               "received_ts": received_ts(email), "email": fit_email(email), "stored_ts": now, "source": "sync"}
        created = store.create(MESSAGES, key, doc)
        outcomes.append((created, created or (store.get(MESSAGES, key) or {}).get("source") == "sync"))
    _update_threads(store, connection, emails, now)
    return outcomes


def _update_threads(store: Store, connection: dict, emails: list[dict], now: float) -> None:
    """Add the emails to their threads' snapshots (one store read of the snapshots; one read and one
    write per thread that gained a message)."""
    by_thread: dict[str, list[str]] = {}
    for email in emails:
        if email.get("thread_id"):
            by_thread.setdefault(email["thread_id"], []).append(store_key(email["id"]))
    if not by_thread:
        return
    snapshots = store.get_many(THREADS, [store_key(t) for t in by_thread])
    for thread_id, keys in by_thread.items():
        known = list((snapshots.get(store_key(thread_id)) or {}).get("message_keys") or [])
        if all(k in known for k in keys):
            continue
        wanted = known + [k for k in keys if k not in known]
        docs = store.get_many(MESSAGES, wanted)
        stored = sorted((docs[k] for k in wanted if isinstance((docs.get(k) or {}).get("email"), dict)),
                        key=lambda d: (d["email"].get("received_at") or "", d["id"]))
        members = [d["email"] for d in stored]
        summary = {"id": thread_id, "subject": members[0].get("subject") if members else None,
                   "message_count": len(members), "participants": _participants(members),
                   "last_message_at": max((m.get("received_at") or "" for m in members), default="") or None,
                   "provider": connection.get("provider")}
        store.put(THREADS, store_key(thread_id), {
            "tenant_id": connection["tenant_id"], "connection_id": connection["id"], "thread_id": thread_id,
            "thread": summary, "message_keys": [d["id"] for d in stored], "synced_ts": now})


def _participants(emails: list[dict]) -> list[dict]:
    """from, to, cc in order of appearance, once per address (case-blind), the first name seen kept."""
    seen: dict[str, dict] = {}
    for email in emails:
        for person in [email.get("from"), *(email.get("to") or []), *(email.get("cc") or [])]:
            if not person or not person.get("email"):
                continue
            entry = seen.setdefault(person["email"].lower(), {"email": person["email"], "name": None})
            entry["name"] = entry["name"] or person.get("name")
    return list(seen.values())


def apply_label_changes(store: Store, connection_id: str, changes: Mapping[str, LabelChange]) -> int:
    """Apply label changes made in the mailbox to stored copies (`labels`, `is_read`); messages the
    store does not hold are ignored. Returns how many copies changed. Idempotent."""
    wanted = {f"{connection_id}:{mid}": change for mid, change in changes.items()}
    docs = store.get_many(MESSAGES, list(wanted)) if wanted else {}
    changed = 0
    for key, doc in docs.items():
        email, change = doc.get("email"), wanted[key]
        if not isinstance(email, dict):
            continue
        current = list(email.get("labels") or [])
        labels = [x for x in current if x not in change.removed] + sorted(change.added - set(current))
        if labels != current:
            store.update(MESSAGES, key, {"email": {**email, "labels": labels, "is_read": "UNREAD" not in labels},
                                         "stored_ts": clock.now()})
            changed += 1
    return changed


def forget_deleted(store: Store, connection_id: str, message_ids: Iterable[str]) -> None:
    """Drop the stored copies of messages deleted for good from the mailbox (trash keeps them)."""
    for message_id in message_ids:
        store.delete(MESSAGES, f"{connection_id}:{message_id}")

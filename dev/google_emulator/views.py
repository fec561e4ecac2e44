"""Gmail's response bodies: a message in each format, a thread, and the paged list answers."""
from __future__ import annotations

from .errors import bad_request, not_found
from .labels import SPAM_TRASH
from .mailbox import Mailbox, StoredMessage
from .mime import b64url
from .query import matches, parse_query

FORMATS = ("full", "metadata", "minimal", "raw")


def message(msg: StoredMessage, fmt: str = "full", metadata_headers: list[str] | None = None) -> dict:
    """A Message resource in `fmt` (full | metadata | minimal | raw)."""
    if fmt not in FORMATS:
        raise bad_request(f"Invalid value at 'format' ({fmt})")
    body = {"id": msg.id, "threadId": msg.thread_id, "labelIds": list(msg.labels),
            "snippet": msg.parsed.snippet, "sizeEstimate": len(msg.raw),
            "historyId": str(msg.history_id), "internalDate": str(msg.internal_ms)}
    if fmt == "full":
        body["payload"] = msg.parsed.payload
    elif fmt == "metadata":
        wanted = {h.lower() for h in metadata_headers or []}
        headers = [h for h in msg.parsed.headers if not wanted or h["name"].lower() in wanted]
        body["payload"] = {"mimeType": msg.parsed.payload["mimeType"], "headers": headers}
    elif fmt == "raw":
        body["raw"] = b64url(msg.raw)
    return body


def thread(box: Mailbox, thread_id: str, fmt: str = "full",
           metadata_headers: list[str] | None = None) -> dict:
    """A Thread with its visible messages oldest first; NotFoundError if none is visible."""
    with box.lock:
        visible = {m.id for m in box.visible()}
        msgs = [box.messages[i] for i in box.threads.get(thread_id, []) if i in visible]
        if not msgs:
            raise not_found()
        msgs.sort(key=lambda m: (m.internal_ms, m.id))
        return {"id": thread_id, "historyId": str(max(m.history_id for m in msgs)),
                "messages": [message(m, fmt if fmt != "raw" else "minimal", metadata_headers)
                             for m in msgs]}


def _matching(box: Mailbox, q: str | None, label_ids: list[str], include_spam_trash: bool,
              now) -> list[StoredMessage]:
    terms, named = parse_query(q or "", now)
    skip = set() if include_spam_trash or named & (SPAM_TRASH | {"ANYWHERE"}) or \
        set(label_ids) & SPAM_TRASH else SPAM_TRASH
    out = []
    for msg in box.visible():
        if skip & set(msg.labels) or not set(label_ids) <= set(msg.labels):
            continue
        if terms and not matches(terms, box.doc(msg)):
            continue
        out.append(msg)
    return out


def _page(items: list, max_results: int | None, page_token: str | None) -> tuple[list, str | None]:
    size = 100 if max_results is None else max_results
    if not 1 <= size <= 500:
        raise bad_request("Invalid maxResults: must be between 1 and 500")
    try:
        start = int(page_token) if page_token else 0
    except ValueError:
        raise bad_request("Invalid pageToken") from None
    chunk = items[start:start + size]
    return chunk, (str(start + size) if start + size < len(items) else None)


def list_messages(box: Mailbox, args, now) -> dict:
    """messages.list: `{messages: [{id, threadId}], nextPageToken?, resultSizeEstimate}`, newest first."""
    with box.lock:
        found = _matching(box, args.get("q"), args.getlist("labelIds"),
                          args.get("includeSpamTrash", "false").lower() == "true", now)
        chunk, token = _page(found, args.get("maxResults", type=int), args.get("pageToken"))
        body: dict = {}
        if chunk:
            body["messages"] = [m.ref() for m in chunk]
        if token:
            body["nextPageToken"] = token
        body["resultSizeEstimate"] = len(found)
        return body


def list_threads(box: Mailbox, args, now) -> dict:
    """threads.list: threads with a matching message, the most recent first."""
    with box.lock:
        found = _matching(box, args.get("q"), args.getlist("labelIds"),
                          args.get("includeSpamTrash", "false").lower() == "true", now)
        order: list[str] = []
        for msg in found:  # newest first, so a thread's first hit is its newest message
            if msg.thread_id not in order:
                order.append(msg.thread_id)
        chunk, token = _page(order, args.get("maxResults", type=int), args.get("pageToken"))
        threads = []
        for tid in chunk:
            msgs = [box.messages[i] for i in box.threads[tid] if i in box.messages]
            latest = max(msgs, key=lambda m: (m.internal_ms, m.id))
            threads.append({"id": tid, "snippet": latest.parsed.snippet,
                            "historyId": str(max(m.history_id for m in msgs))})
        body: dict = {}
        if threads:
            body["threads"] = threads
        if token:
            body["nextPageToken"] = token
        body["resultSizeEstimate"] = len(order)
        return body

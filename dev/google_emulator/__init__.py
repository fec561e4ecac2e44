"""A Google sign-in + Gmail API v1 emulator we own, speaking the real wire format, for tests and `make dev`.

One server serves both. With base URL ``B`` (``run_in_thread`` returns it; ``make dev`` uses
``python -m dev.google_emulator --port 8090 --client-id ID --client-secret S --account me@example.com``)::

    GOOGLE_AUTH_URL    = B + "/o/oauth2/v2/auth"
    GOOGLE_TOKEN_URL   = B + "/token"
    GOOGLE_REVOKE_URL  = B + "/revoke"
    GMAIL_API_ENDPOINT = B            (JSON calls under /gmail/v1, uploads under /upload/gmail/v1,
                                       batch at /batch/gmail/v1 and /batch)

Python use::

    state = EmulatorState()
    state.add_client("cid", "secret")
    state.add_account("me@example.com")
    with run_in_thread(state) as (base_url, stop):
        ...                                   # or: base_url, stop = run_in_thread(state)

Making googleapiclient honour an ``http://`` endpoint everywhere (for the adapter's author).
``build("gmail", "v1", client_options={"api_endpoint": B})`` fixes only plain JSON calls: media
uploads keep the discovery document's ``https://gmail.googleapis.com/`` scheme (the library only
swaps the host), and ``service.new_batch_http_request()`` posts to ``https://gmail.googleapis.com/batch``.
Build from the bundled document with its ``rootUrl`` replaced instead; then JSON calls, uploads
(``B/upload/gmail/v1/...``, resumable sessions follow the ``Location`` we answer) and
``new_batch_http_request()`` (``B/batch``) all go to ``B``, still offline::

    doc = json.loads(googleapiclient.discovery_cache.get_static_doc("gmail", "v1"))
    doc["rootUrl"] = B.rstrip("/") + "/"
    service = googleapiclient.discovery.build_from_document(doc, credentials=creds)

(Alternatives: ``BatchHttpRequest(batch_uri=B + "/batch/gmail/v1")`` for batches, and for a request
built with ``build(...)``, rewrite ``req.uri``'s scheme and host to ``B``'s before ``execute()``.)

Behaviour notes: ids are 16 hex chars; ``raw`` and ``body.data`` are base64url with padding;
header values are raw (encoded-words kept, folding removed); errors use Google's
``{"error": {code, message, errors: [{message, domain, reason}], status}}`` shape; the emulator's
own controls live under ``/emulator/`` (see controls.py) and as methods of ``EmulatorState``.
Call counts use the discovery method ids ("gmail.users.messages.get"), plus "batch",
"oauth2.token" and "oauth2.revoke"; quota units per account follow FACTS.md.
"""
from .app import RunningServer, create_app, run_in_thread
from .state import EmulatorState

__all__ = ["EmulatorState", "RunningServer", "create_app", "run_in_thread"]

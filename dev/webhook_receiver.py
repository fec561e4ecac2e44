"""A webhook endpoint for `make dev`: prints every delivery it gets and keeps them for GET /received."""
from __future__ import annotations

import json
import threading

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response


class WebhookReceiver:
    """Accepts every POST (204), prints a line per event, and lists them as JSON at GET /received."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        request = Request(environ)
        if request.method == "POST":
            body = json.loads(request.get_data() or b"{}")
            with self._lock:
                self.received.append({"webhook-id": request.headers.get("webhook-id"), "body": body})
            data = body.get("data") or {}
            print(f"webhook received: {body.get('type')} {body.get('id')} "
                  f"subject={data.get('subject')!r} from={(data.get('from') or {}).get('email')}", flush=True)
            return Response(status=204)(environ, start_response)
        with self._lock:
            listing = json.dumps(self.received)
        return Response(listing, mimetype="application/json")(environ, start_response)


def serve_in_thread(port: int) -> WebhookReceiver:
    receiver = WebhookReceiver()
    server = make_server("127.0.0.1", port, receiver, threaded=True)
    threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True).start()
    return receiver

"""GmailProvider per operation: upstream calls, Gmail quota units and our added latency, against the emulator.

Added latency compares the adapter with a careful direct googleapiclient client making the SAME
upstream calls (the same service build, a kept-alive Http, one batch for a page) without our
parsing, retries or bookkeeping. Each call's "own" time is its total time minus the time spent
inside httplib2 (the wire and the emulator's work), so emulator noise does not blur it;
added = adapter own − direct own. Upstream latency is simulated per HTTP round trip (a WSGI
middleware sleeps before each request; a batch's sub-requests are not delayed one by one, as
Gmail runs them in parallel). DESIGN.md's budget at 0 ms: p50 ≤ 5 ms / p99 ≤ 20 ms for send and
get thread, p50 ≤ 15 ms for a page of 50. Run `python bench/gmail_ops.py` from the repository root.
"""
from __future__ import annotations

import base64
import sys
import threading
import time
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from googleapiclient.http import BatchHttpRequest  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from bench.common import percentile  # noqa: E402
from dev.google_emulator import EmulatorState, create_app  # noqa: E402
from dev.google_emulator.state import Grant  # noqa: E402
from mailbridge.config import Settings  # noqa: E402
from mailbridge.providers import gmail_http  # noqa: E402
from mailbridge.providers.base import SearchQuery  # noqa: E402
from mailbridge.providers.gmail import MESSAGE_HEADERS, THREAD_HEADERS, GmailProvider  # noqa: E402

ACCOUNT = "bench@example.com"
SCOPE = "https://www.googleapis.com/auth/gmail.modify"
THREADS = 60
RUNS = ((0, 40), (50, 10))  # (simulated ms per round trip, timed runs per side)


def _raw(subject: str, n: int, reply_to: str | None = None, to: str = ACCOUNT) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = f"Sender {n} <s{n}@example.com>", to, subject
    msg["Message-ID"] = f"<m{n}-{subject.replace(' ', '')}@example.com>"
    if reply_to:
        msg["In-Reply-To"] = msg["References"] = reply_to
    msg.set_content(f"Body of {subject} number {n}, a few words of text.\n" * 5)
    return msg.as_bytes(policy=SMTP)


def _serve(state: EmulatorState, latency: dict):
    """The emulator behind a middleware that sleeps `latency["s"]` before every HTTP request (the
    app's batch endpoint dispatches its sub-requests to app.wsgi_app, which is not delayed)."""
    app = create_app(state)

    def delayed(environ, start_response):
        if latency["s"]:
            time.sleep(latency["s"])
        return app(environ, start_response)

    server = make_server("127.0.0.1", 0, delayed, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


class Direct:
    """The careful direct client: the same upstream calls, raw JSON back, nothing else."""

    def __init__(self, base: str, token: str):
        api = gmail_http._service(base)  # resources made once, as a careful client would
        self.messages, self.threads = api.messages, api.threads
        self.http = gmail_http._http(None)
        self.base, self.auth = base, "Bearer " + token

    def _run(self, request):
        request.headers["authorization"] = self.auth
        return request.execute(http=self.http)

    def _batch(self, requests) -> list:
        out: list = []
        batch = BatchHttpRequest(batch_uri=self.base + "/batch/gmail/v1")
        for request in requests:
            request.headers["authorization"] = self.auth
            batch.add(request, callback=lambda _id, resp, exc: out.append(resp))
        batch.execute(http=self.http)
        return out

    def send(self, raw: bytes):
        return self._run(self.messages.send(
            userId="me", body={"raw": base64.urlsafe_b64encode(raw).decode()}))

    def get_thread(self, thread_id: str):
        return self._run(self.threads.get(userId="me", id=thread_id, format="full"))

    def list_threads(self):
        listing = self._run(self.threads.list(userId="me", maxResults=50))
        return self._batch([self.threads.get(userId="me", id=t["id"], format="metadata",
                                                     metadataHeaders=THREAD_HEADERS) for t in listing["threads"]])

    def search(self):
        listing = self._run(self.messages.list(userId="me", maxResults=50))
        return self._batch([self.messages.get(userId="me", id=m["id"], format="metadata",
                                                      metadataHeaders=MESSAGE_HEADERS) for m in listing["messages"]])


class Wire:
    """Time spent inside httplib2's `request` (sending, the emulator's work, receiving) on this thread."""

    def __init__(self, http):
        self.seconds, original = 0.0, http.request

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        http.request = timed


def _time(fn, runs: int, wire: Wire) -> tuple[list[float], list[float]]:
    """(total ms, own ms = total minus the time on the wire) per run, after one warm-up run."""
    fn()  # warm-up: service build, connection, first-call caches
    totals, own = [], []
    for _ in range(runs):
        wire.seconds = 0.0
        start = time.perf_counter()
        fn()
        total = time.perf_counter() - start
        totals.append(total * 1000)
        own.append((total - wire.seconds) * 1000)
    return totals, own


def _mailbox() -> tuple[EmulatorState, str, list[str]]:
    """An emulator with THREADS two-message threads, and an access token for it."""
    state = EmulatorState()
    state.add_account(ACCOUNT)
    thread_ids = []
    for n in range(THREADS):
        first = state.deliver(ACCOUNT, _raw(f"topic {n}", n), internal_ms=(1_700_000_000 + 120 * n) * 1000)
        state.deliver(ACCOUNT, _raw(f"Re: topic {n}", n + 1000, f"<m{n}-topic{n}@example.com>"),
                      internal_ms=(1_700_000_060 + 120 * n) * 1000)
        thread_ids.append(first.thread_id)
    return state, state.issue_tokens(Grant(ACCOUNT, "bench", [SCOPE], None)), thread_ids


def main() -> None:
    state, token, thread_ids = _mailbox()
    latency = {"s": 0.0}
    server, base = _serve(state, latency)
    provider = GmailProvider("conn_bench", lambda force=False: token, Settings(gmail_api_endpoint=base),
                             scopes=(SCOPE,))
    direct = Direct(base, token)
    outgoing, thread = _raw("outgoing", 9999, to="friend@example.com"), thread_ids[-1]
    ops = [
        ("send", lambda: provider.send(outgoing), lambda: direct.send(outgoing)),
        ("get thread", lambda: provider.get_thread(thread), lambda: direct.get_thread(thread)),
        ("list 50 threads", lambda: provider.list_threads(q=None, limit=50, page_token=None), direct.list_threads),
        ("search 50", lambda: provider.search(SearchQuery(), limit=50, page_token=None, include_body=False),
         direct.search),
    ]
    wire = Wire(gmail_http._http(None))  # the adapter and the direct client share this thread's Http
    print(f"{'operation':<16} {'latency':>7} {'calls':>5} {'quota':>5} {'direct p50':>10} {'adapter p50':>11} "
          f"{'direct own p50/p99':>18} {'adapter own p50/p99':>19} {'added p50/p99':>14}  (ms)")
    try:
        for latency_ms, runs in RUNS:
            latency["s"] = latency_ms / 1000
            for name, ours, theirs in ops:
                before = (provider.stats.calls, provider.stats.quota_units)
                ours()
                calls, units = provider.stats.calls - before[0], provider.stats.quota_units - before[1]
                mine, base_line = ([], []), ([], [])
                for _ in range(2):  # interleaved halves, so drift hits both sides alike
                    for side, fn in ((base_line, theirs), (mine, ours)):
                        totals, own = _time(fn, runs // 2, wire)
                        side[0].extend(totals)
                        side[1].extend(own)
                d50, d99 = percentile(base_line[1], 0.5), percentile(base_line[1], 0.99)
                a50, a99 = percentile(mine[1], 0.5), percentile(mine[1], 0.99)
                print(f"{name:<16} {latency_ms:>5}ms {calls:>5} {units:>5} {percentile(base_line[0], 0.5):>10.1f} "
                      f"{percentile(mine[0], 0.5):>11.1f} {d50:>9.2f}/{d99:<8.2f} {a50:>10.2f}/{a99:<8.2f} "
                      f"{a50 - d50:>6.2f}/{a99 - d99:<7.2f}")
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    main()

"""Our overhead on reads: the whole Flask stack vs the Gmail adapter alone, against the emulator at 0 and 50 ms.

DESIGN.md's budgets (emulator answering instantly): p50 ≤ 5 ms and p99 ≤ 20 ms over the adapter for
get message / get thread; p50 ≤ 15 ms for a page of 50 (list threads, search). Round trips and Gmail
quota units per operation are counted by the emulator and printed beside each figure.

    .venv/bin/python -m bench.read_ops [--runs 200]
"""
from __future__ import annotations

import argparse
import base64
import statistics
import tempfile
from email.message import EmailMessage
from pathlib import Path

from bench.common import connect_emulated_mailbox, percentile, time_alternating
from dev.google_emulator import EmulatorState, run_in_thread
from mailbridge.api.app import create_app
from mailbridge.bus.inline import InlineBus
from mailbridge.config import Settings
from mailbridge.core import keys
from mailbridge.core.connections import get_connection
from mailbridge.core.mailbox import provider_for
from mailbridge.core.permissions import Permissions, RateLimit
from mailbridge.providers.base import SearchQuery
from mailbridge.runtime import Runtime
from mailbridge.secrets.env import EnvSecretStore
from mailbridge.store.sqlite import SqliteStore

ACCOUNT, CLIENT_ID, CLIENT_SECRET = "bench@example.com", "bench-client", "bench-secret"
PUBLIC = "http://127.0.0.1:8080"


def _mail(i: int, reply_to: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["Subject"] = f"{'Re: ' if reply_to else ''}Report {0 if reply_to else i}"
    msg["From"], msg["To"], msg["Message-ID"] = f"sender{i}@example.com", ACCOUNT, f"<m{i}@bench.example>"
    if reply_to:
        msg["In-Reply-To"] = msg["References"] = reply_to
    msg.set_content(f"body {i} " * 40)
    return msg.as_bytes()


def _setup(folder: Path):
    state = EmulatorState()
    state.add_client(CLIENT_ID, CLIENT_SECRET, [PUBLIC + "/oauth/callback/google"])
    state.add_account(ACCOUNT)
    server = run_in_thread(state)
    base = server.base_url
    settings = Settings(google_client_id=CLIENT_ID, google_auth_url=base + "/o/oauth2/v2/auth",
                        google_token_url=base + "/token", google_revoke_url=base + "/revoke",
                        gmail_api_endpoint=base, public_base_url=PUBLIC, push_auth="off")
    secrets = EnvSecretStore({"MAILBRIDGE_ENCRYPTION_KEY": base64.b64encode(b"b" * 32).decode(),
                              "GOOGLE_CLIENT_SECRET": CLIENT_SECRET})
    runtime = Runtime(settings, store=SqliteStore(folder / "bench.db"), secrets=secrets, bus=InlineBus())
    api = create_app(runtime=runtime).test_client()
    unlimited = Permissions(rate_limit=RateLimit(per_minute=1_000_000, per_hour=100_000_000))
    key = keys.create_api_key(runtime.store, tenant_id="bench", name="bench", permissions=unlimited)["key"]
    headers = {"Authorization": "Bearer " + key}
    conn = connect_emulated_mailbox(api, headers, "u")
    first = None
    for i in range(60):
        stored = state.deliver(ACCOUNT, _mail(i), internal_ms=1_770_000_000_000 + i * 1000)
        first = first or stored
    for i in range(60, 64):   # a thread of 5 messages
        state.deliver(ACCOUNT, _mail(i, reply_to="<m0@bench.example>"), internal_ms=1_770_000_000_000 + i * 1000)
    return state, server, runtime, api, headers, conn, first


def main(runs: int = 200) -> None:
    with tempfile.TemporaryDirectory() as folder:
        state, server, runtime, api, headers, conn, first = _setup(Path(folder))
        try:
            adapter = provider_for(runtime, get_connection(runtime, conn))
            mid, tid = f"google:{conn}:{first.id}", f"google:{conn}:{first.thread_id}"

            def http(path, **query):
                def call():
                    resp = api.get(path, headers=headers, query_string=query)
                    assert resp.status_code == 200, resp.get_data(as_text=True)
                return call

            ops = [("get message", http(f"/v1/messages/{mid}"),
                    lambda: adapter.get_message(first.id, include_body=False)),
                   ("get thread", http(f"/v1/threads/{tid}"), lambda: adapter.get_thread(first.thread_id)),
                   ("list 50 threads", http("/v1/threads", limit=50, connection_id=conn),
                    lambda: adapter.list_threads(q=None, limit=50, page_token=None)),
                   ("search 50", http("/v1/messages", limit=50, connection_id=conn),
                    lambda: adapter.search(SearchQuery(), limit=50, page_token=None, include_body=False))]
            for latency in (0, 50):
                state.latency_ms = latency
                n = runs if latency == 0 else max(3, runs // 50)
                print(f"\nReads, emulator latency {latency} ms, {n} runs (ms)")
                print(f"{'operation':<16} {'stack p50':>9} {'p99':>7} {'adapter p50':>11} {'p99':>7} "
                      f"{'overhead p50':>12} {'p99':>7} {'trips':>5} {'quota':>5}")
                for name, stack, direct in ops:
                    before = dict(state.snapshot()["calls"]), dict(state.snapshot()["quota"])
                    stack()
                    after = state.snapshot()
                    trips = sum(after["calls"].values()) - sum(before[0].values())
                    trips -= sum(after["calls"].get(m, 0) - before[0].get(m, 0) for m in
                                 ("gmail.users.messages.get", "gmail.users.threads.get")
                                 if after["calls"].get("batch", 0) > before[0].get("batch", 0))
                    quota = after["quota"].get(ACCOUNT, 0) - before[1].get(ACCOUNT, 0)
                    s, d = time_alternating(stack, direct, n)
                    print(f"{name:<16} {statistics.median(s):>9.2f} {percentile(s, 0.99):>7.2f} {statistics.median(d):>11.2f} "
                          f"{percentile(d, 0.99):>7.2f} {statistics.median(s) - statistics.median(d):>12.2f} "
                          f"{percentile(s, 0.99) - percentile(d, 0.99):>7.2f} {trips:>5} {quota:>5}")
        finally:
            server.stop()
            runtime.store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    main(parser.parse_args().runs)

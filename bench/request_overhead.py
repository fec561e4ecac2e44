"""Our own overhead for one authenticated request through the whole Flask stack (auth, rate limit,
validation, error envelope), on SQLite and on the Firestore emulator: p50/p99 over many requests."""
from __future__ import annotations

import base64
import tempfile
import time
from pathlib import Path

from bench.common import percentile, time_alternating
from mailbridge.api.app import create_app
from mailbridge.config import Settings
from mailbridge.core import keys
from mailbridge.runtime import Runtime
from mailbridge.secrets.env import EnvSecretStore
from mailbridge.store.base import API_KEYS, RATE_LIMITS
from tests import emulators

SECRETS = {"MAILBRIDGE_ADMIN_KEY": "mbk_" + "b" * 43,
           "MAILBRIDGE_ENCRYPTION_KEY": base64.b64encode(b"b" * 32).decode()}


def measure(store, requests: int) -> dict[str, float]:
    """GET /v1/api-keys with a tenant key through the whole stack, against the same store calls made
    directly (1 key read, 2 counter increments, 1 list query): the difference is our overhead."""
    runtime = Runtime(Settings(), store=store, secrets=EnvSecretStore(SECRETS))
    client = create_app(["manage"], runtime).test_client()
    created = keys.create_api_key(store, tenant_id="bench", name="bench")
    headers = {"Authorization": f"Bearer {created['key']}"}

    def through_stack():
        resp = client.get("/v1/api-keys", headers=headers)
        assert resp.status_code == 200, resp.get_data(as_text=True)

    def direct():
        store.get(API_KEYS, created["id"])
        store.increment(RATE_LIMITS, "direct:m", "count", 1, expires_at=time.time() + 120)
        store.increment(RATE_LIMITS, "direct:h", "count", 1, expires_at=time.time() + 3700)
        store.query(API_KEYS, [("tenant_id", "==", "bench")], order_by="created_ts")

    stack, plain = time_alternating(through_stack, direct, requests, warmup=20)
    return {"stack_p50": percentile(stack, 0.5), "stack_p99": percentile(stack, 0.99),
            "direct_p50": percentile(plain, 0.5), "direct_p99": percentile(plain, 0.99)}


def main(requests: int = 250) -> None:
    from mailbridge.store.sqlite import SqliteStore
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(("sqlite", measure(SqliteStore(Path(tmp) / "bench.db"), requests)))
    with emulators.start_firestore() as emulator:
        import os
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
        from mailbridge.store.firestore import FirestoreStore
        rows.append(("firestore emulator", measure(FirestoreStore(project=emulators.TEST_PROJECT), requests)))
    print(f"\nAuthenticated GET /v1/api-keys, {requests} requests (ms): whole Flask stack vs the same store calls "
          "made directly; overhead = the difference (budget p50 ≤ 5, p99 ≤ 20)")
    print(f"{'store':<20} {'stack p50':>9} {'stack p99':>9} {'direct p50':>10} {'direct p99':>10} "
          f"{'ovh p50':>8} {'ovh p99':>8}")
    for name, m in rows:
        print(f"{name:<20} {m['stack_p50']:>9.2f} {m['stack_p99']:>9.2f} {m['direct_p50']:>10.2f} "
              f"{m['direct_p99']:>10.2f} {m['stack_p50'] - m['direct_p50']:>8.2f} "
              f"{m['stack_p99'] - m['direct_p99']:>8.2f}")


if __name__ == "__main__":
    main()

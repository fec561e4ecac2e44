"""Our own overhead for one authenticated request through the whole Flask stack (auth, rate limit,
validation, error envelope), on SQLite and on the Firestore emulator: p50/p99 over many requests."""
from __future__ import annotations

import base64
import statistics
import tempfile
import time
from pathlib import Path

from mailbridge.api.app import create_app
from mailbridge.config import Settings
from mailbridge.core import keys
from mailbridge.runtime import Runtime
from mailbridge.secrets.env import EnvSecretStore
from tests import emulators

SECRETS = {"MAILBRIDGE_ADMIN_KEY": "mbk_" + "b" * 43,
           "MAILBRIDGE_ENCRYPTION_KEY": base64.b64encode(b"b" * 32).decode()}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(store, requests: int) -> tuple[float, float, float]:
    """(p50, p99, mean) in ms of GET /v1/api-keys with a tenant key (1 key read, 2 counter
    increments, 1 list query), after a warm-up."""
    runtime = Runtime(Settings(), store=store, secrets=EnvSecretStore(SECRETS))
    client = create_app(["manage"], runtime).test_client()
    created = keys.create_api_key(store, tenant_id="bench", name="bench")
    headers = {"Authorization": f"Bearer {created['key']}"}
    for _ in range(20):
        client.get("/v1/api-keys", headers=headers)
    samples = []
    for _ in range(requests):
        start = time.perf_counter()
        resp = client.get("/v1/api-keys", headers=headers)
        samples.append((time.perf_counter() - start) * 1000)
        assert resp.status_code == 200, resp.get_data(as_text=True)
    return percentile(samples, 0.5), percentile(samples, 0.99), statistics.mean(samples)


def main(requests: int = 250) -> None:
    from mailbridge.store.sqlite import SqliteStore
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(("sqlite", *measure(SqliteStore(Path(tmp) / "bench.db"), requests)))
    with emulators.start_firestore() as emulator:
        import os
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
        from mailbridge.store.firestore import FirestoreStore
        rows.append(("firestore emulator", *measure(FirestoreStore(project=emulators.TEST_PROJECT), requests)))
    print(f"\nAuthenticated GET /v1/api-keys through the whole Flask stack, {requests} requests (ms)")
    print(f"{'store':<20} {'p50':>7} {'p99':>7} {'mean':>7}")
    for name, p50, p99, mean in rows:
        print(f"{name:<20} {p50:>7.2f} {p99:>7.2f} {mean:>7.2f}")


if __name__ == "__main__":
    main()

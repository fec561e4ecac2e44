"""What the benchmarks share: percentiles, alternating timing, and connecting the emulated mailbox."""
from __future__ import annotations

import time
from typing import Callable
from urllib.parse import parse_qs, urlsplit
from urllib.request import HTTPRedirectHandler, build_opener


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile, `q` in [0, 1]."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_alternating(first: Callable[[], object], second: Callable[[], object], runs: int,
                     warmup: int = 1) -> tuple[list[float], list[float]]:
    """Milliseconds of each call, alternating call by call after a warm-up, so that drift (load from
    elsewhere, the Firestore emulator's JIT and GC) weighs on both alike."""
    for _ in range(warmup):
        first(), second()
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for call, out in ((first, samples[0]), (second, samples[1])):
            start = time.perf_counter()
            call()
            out.append((time.perf_counter() - start) * 1000)
    return samples


class _NoRedirect(HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def connect_emulated_mailbox(api, headers: dict, user_id: str) -> str:
    """Connect through the real flow against the Google emulator (set to approve) and return the
    connection id: POST /v1/connect, the consent redirect, GET /oauth/callback/google."""
    started = api.post("/v1/connect", headers=headers, json={
        "provider": "google", "user_id": user_id, "backfill": "none",
        "redirect_url": "http://127.0.0.1:9/done"}).get_json()
    try:
        build_opener(_NoRedirect).open(started["url"])
        raise SystemExit("the emulator's consent page did not redirect")
    except Exception as exc:   # urllib raises HTTPError for the 302 it did not follow
        callback = urlsplit(exc.headers["Location"])
    done = api.get(f"{callback.path}?{callback.query}")
    query = parse_qs(urlsplit(done.headers["Location"]).query)
    if query.get("status") != ["success"]:
        raise SystemExit(f"connecting the emulated mailbox failed: {query}")
    return query["connection_id"][0]

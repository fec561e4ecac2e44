"""`make dev`: the local stack on the embedded default (SQLite store, inline bus, env secrets), with the
Google sign-in + Gmail emulator from dev/google_emulator in a process of its own, so a person can
connect the emulated mailbox, send and read without any Google account.

On the first run it writes .mailbridge/dev.env with a fresh admin key and token-encryption key, so the
local stack has stable secrets without any cloud. Variables already set in the environment win.
"""
from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".mailbridge"
ENV_FILE = STATE / "dev.env"
PORT = int(os.environ.get("PORT", "8080"))
GOOGLE_PORT = int(os.environ.get("GOOGLE_EMULATOR_PORT", "8090"))
DEV_ACCOUNT = os.environ.get("DEV_ACCOUNT", "you@example.com")
DEV_CLIENT_ID, DEV_CLIENT_SECRET = "mailbridge-dev", "dev-client-secret"


def load_or_create_dev_env() -> dict[str, str]:
    """Read .mailbridge/dev.env, creating it with new secrets on the first run (mode 0600)."""
    STATE.mkdir(exist_ok=True)
    if not ENV_FILE.exists():
        ENV_FILE.write_text(
            f"MAILBRIDGE_ADMIN_KEY=mbk_{secrets.token_urlsafe(32)}\n"
            f"MAILBRIDGE_ENCRYPTION_KEY={base64.b64encode(secrets.token_bytes(32)).decode()}\n")
        ENV_FILE.chmod(0o600)
    pairs = (line.split("=", 1) for line in ENV_FILE.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def start_google_emulator() -> subprocess.Popen:
    """The Google emulator in its own process group (stopped with the stack), asking for consent."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dev.google_emulator", "--port", str(GOOGLE_PORT),
         "--client-id", DEV_CLIENT_ID, "--client-secret", DEV_CLIENT_SECRET, "--account", DEV_ACCOUNT],
        cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{GOOGLE_PORT}/emulator/calls", timeout=1)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"the Google emulator did not start (port {GOOGLE_PORT} taken?)")
            time.sleep(0.1)
    raise SystemExit("the Google emulator did not answer within 20 s")


def point_at_google_emulator() -> None:
    base = f"http://127.0.0.1:{GOOGLE_PORT}"
    os.environ.setdefault("GOOGLE_AUTH_URL", base + "/o/oauth2/v2/auth")
    os.environ.setdefault("GOOGLE_TOKEN_URL", base + "/token")
    os.environ.setdefault("GOOGLE_REVOKE_URL", base + "/revoke")
    os.environ.setdefault("GMAIL_API_ENDPOINT", base)
    os.environ.setdefault("GOOGLE_CLIENT_ID", DEV_CLIENT_ID)
    os.environ.setdefault("GOOGLE_CLIENT_SECRET", DEV_CLIENT_SECRET)


def main() -> int:
    for key, value in load_or_create_dev_env().items():
        os.environ.setdefault(key, value)
    emulator = start_google_emulator()
    point_at_google_emulator()
    os.environ.setdefault("MAILBRIDGE_STORE", f"sqlite:///{STATE / 'local.db'}")
    os.environ.setdefault("MAILBRIDGE_BUS", "inline")
    os.environ.setdefault("MAILBRIDGE_SECRETS", "env")
    os.environ.setdefault("PUBLIC_BASE_URL", f"http://localhost:{PORT}")
    print(f"""
mailbridge local stack: http://localhost:{PORT}  (store {os.environ['MAILBRIDGE_STORE']})

Get an API key (shown once), in another terminal:
  .venv/bin/mailbridge keys create --tenant acme --name dev        # reads the same store
or over HTTP with the admin key kept in {ENV_FILE.relative_to(ROOT)}:
  curl -s -X POST http://localhost:{PORT}/v1/api-keys -H "Authorization: Bearer $(grep ADMIN {ENV_FILE.relative_to(ROOT)} | cut -d= -f2)" \\
       -H 'Content-Type: application/json' -d '{{"name": "dev", "tenant_id": "acme"}}'
Then: curl -s http://localhost:{PORT}/v1/api-keys -H "Authorization: Bearer mbk_…"

Connect the emulated Gmail mailbox {DEV_ACCOUNT} (Google emulator on http://127.0.0.1:{GOOGLE_PORT}):
  curl -s -X POST http://localhost:{PORT}/v1/connect -H "Authorization: Bearer mbk_…" -H 'Content-Type: application/json' \
       -d '{{"provider": "google", "user_id": "u_1", "redirect_url": "http://localhost:{PORT}/healthz"}}'
  open the "url" it answers in a browser and press Approve; then send and read:
  curl -s -X POST http://localhost:{PORT}/v1/send -H "Authorization: Bearer mbk_…" -H 'Content-Type: application/json' \
       -d '{{"from": "{DEV_ACCOUNT}", "to": ["{DEV_ACCOUNT}"], "subject": "Hello", "text": "World"}}'
  curl -s "http://localhost:{PORT}/v1/messages?include_body=true" -H "Authorization: Bearer mbk_…"
""", flush=True)
    from mailbridge.cli import main as cli_main
    try:
        return cli_main(["serve", "--port", str(PORT), "--host", "127.0.0.1"])
    finally:
        os.killpg(emulator.pid, signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(main())

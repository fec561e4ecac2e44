"""`make dev` (`python -m dev.stack`): the local stack on the embedded default (SQLite store, inline bus, env secrets), with the
Google sign-in + Gmail emulator (dev/google_emulator) in a process of its own and a webhook receiver, so
a person can connect the emulated mailbox, send, read, and watch a webhook fire — offline, without any
Google account.

On the first run it writes .mailbridge/dev.env with a fresh admin key and token-encryption key, so the
local stack keeps stable secrets. Variables already set in the environment win. Ports: PORT (8080),
GOOGLE_EMULATOR_PORT (8090), WEBHOOK_RECEIVER_PORT (8091); state folder: MAILBRIDGE_DEV_DIR (.mailbridge).
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
STATE = Path(os.environ.get("MAILBRIDGE_DEV_DIR", ROOT / ".mailbridge"))
ENV_FILE = STATE / "dev.env"
PORT = int(os.environ.get("PORT", "8080"))
GOOGLE_PORT = int(os.environ.get("GOOGLE_EMULATOR_PORT", "8090"))
RECEIVER_PORT = int(os.environ.get("WEBHOOK_RECEIVER_PORT", "8091"))
DEV_ACCOUNT = os.environ.get("DEV_ACCOUNT", "you@example.com")
DEV_CLIENT_ID, DEV_CLIENT_SECRET = "mailbridge-dev", "dev-client-secret"


def load_or_create_dev_env() -> dict[str, str]:
    """Read dev.env, creating it with new secrets on the first run (mode 0600)."""
    STATE.mkdir(parents=True, exist_ok=True)
    if not ENV_FILE.exists():
        ENV_FILE.write_text(
            f"MAILBRIDGE_ADMIN_KEY=mbk_{secrets.token_urlsafe(32)}\n"
            f"MAILBRIDGE_ENCRYPTION_KEY={base64.b64encode(secrets.token_bytes(32)).decode()}\n")
        ENV_FILE.chmod(0o600)
    pairs = (line.split("=", 1) for line in ENV_FILE.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def start_google_emulator() -> subprocess.Popen:
    """The Google emulator in its own process group; its watch notifications are pushed to our
    /push/gmail as a Pub/Sub push subscription would."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dev.google_emulator", "--port", str(GOOGLE_PORT),
         "--client-id", DEV_CLIENT_ID, "--client-secret", DEV_CLIENT_SECRET, "--account", DEV_ACCOUNT,
         "--decision", os.environ.get("GOOGLE_EMULATOR_DECISION", "ask"),
         "--push-endpoint", f"http://127.0.0.1:{PORT}/push/gmail"],
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


def configure_environment() -> None:
    """The embedded default, pointed at the local emulators. Local development only: push auth off and
    private webhook URLs allowed."""
    for key, value in load_or_create_dev_env().items():
        os.environ.setdefault(key, value)
    google = f"http://127.0.0.1:{GOOGLE_PORT}"
    defaults = {
        "MAILBRIDGE_STORE": f"sqlite:///{STATE / 'local.db'}", "MAILBRIDGE_BUS": "inline",
        "MAILBRIDGE_SECRETS": "env", "PUBLIC_BASE_URL": f"http://localhost:{PORT}",
        "GOOGLE_AUTH_URL": google + "/o/oauth2/v2/auth", "GOOGLE_TOKEN_URL": google + "/token",
        "GOOGLE_REVOKE_URL": google + "/revoke", "GMAIL_API_ENDPOINT": google,
        "GOOGLE_CLIENT_ID": DEV_CLIENT_ID, "GOOGLE_CLIENT_SECRET": DEV_CLIENT_SECRET,
        "GMAIL_PUBSUB_TOPIC": "projects/mailbridge-dev/topics/gmail-notifications",
        "MAILBRIDGE_PUSH_AUTH": "off", "MAILBRIDGE_ALLOW_PRIVATE_WEBHOOKS": "1",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)


def instructions() -> str:
    api, env_file = f"http://localhost:{PORT}", ENV_FILE
    auth = '-H "Authorization: Bearer $KEY" -H "Content-Type: application/json"'
    return f"""
mailbridge local stack: {api}   store {os.environ['MAILBRIDGE_STORE']}
Google emulator: http://127.0.0.1:{GOOGLE_PORT}   webhook receiver: http://127.0.0.1:{RECEIVER_PORT}

1. An API key (shown once), from another terminal (same store):
     KEY=$(.venv/bin/mailbridge keys create --tenant acme --name dev | python3 -c 'import json,sys;print(json.load(sys.stdin)["key"])')
   (or POST {api}/v1/api-keys with the admin key kept in {env_file})
2. Connect the emulated Gmail mailbox {DEV_ACCOUNT}:
     curl -s -X POST {api}/v1/connect {auth} -d '{{"provider": "google", "user_id": "u_1", "redirect_url": "{api}/healthz"}}'
   open the "url" it answers in a browser and press Approve.
3. A webhook that prints here:
     curl -s -X POST {api}/v1/webhooks {auth} -d '{{"url": "http://127.0.0.1:{RECEIVER_PORT}/hook"}}'
4. Mail arriving in the mailbox fires it ("webhook received: email.received …" below):
     curl -s -X POST http://127.0.0.1:{GOOGLE_PORT}/emulator/accounts/{DEV_ACCOUNT}/deliver -H 'Content-Type: message/rfc822' \\
          --data-binary $'From: Ann <ann@example.org>\\r\\nTo: {DEV_ACCOUNT}\\r\\nSubject: Hello\\r\\n\\r\\nHi!\\r\\n'
5. Send and read:
     curl -s -X POST {api}/v1/send {auth} -d '{{"from": "{DEV_ACCOUNT}", "to": ["ann@example.org"], "subject": "Hi", "text": "World"}}'
     curl -s "{api}/v1/messages?include_body=true" -H "Authorization: Bearer $KEY"
"""


def main() -> int:
    configure_environment()
    emulator = start_google_emulator()
    try:
        from dev.webhook_receiver import serve_in_thread
        serve_in_thread(RECEIVER_PORT)
        print(instructions(), flush=True)
        from mailbridge.cli import main as cli_main
        return cli_main(["serve", "--port", str(PORT), "--host", "127.0.0.1"])
    finally:
        os.killpg(emulator.pid, signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(main())

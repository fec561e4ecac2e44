"""`make dev`: the local stack on the embedded default (SQLite store, inline bus, env secrets).

On the first run it writes .mailbridge/dev.env with a fresh admin key and token-encryption key, so the
local stack has stable secrets without any cloud. Variables already set in the environment win.
"""
from __future__ import annotations

import base64
import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".mailbridge"
ENV_FILE = STATE / "dev.env"
PORT = int(os.environ.get("PORT", "8080"))


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


def main() -> int:
    for key, value in load_or_create_dev_env().items():
        os.environ.setdefault(key, value)
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
""", flush=True)
    from mailbridge.cli import main as cli_main
    return cli_main(["serve", "--port", str(PORT), "--host", "127.0.0.1"])


if __name__ == "__main__":
    sys.exit(main())

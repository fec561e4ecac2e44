"""The `mailbridge` command: `serve` (every function on one port), `renew` (one renewal tick) and `keys create`."""
from __future__ import annotations

import argparse
import json
import sys
import typing

from mailbridge.core.permissions import Operation


def _serve(args: argparse.Namespace) -> int:
    from werkzeug.serving import run_simple

    from mailbridge.api.app import create_app
    from mailbridge.runtime import default_runtime
    app = create_app()
    print(f"mailbridge serving every function on http://{args.host}:{args.port}", flush=True)
    try:
        run_simple(args.host, args.port, app, threaded=True, use_reloader=False)
    finally:
        default_runtime().bus.drain(5)  # let queued webhook deliveries finish
    return 0


def _keys_create(args: argparse.Namespace) -> int:
    from mailbridge.core import keys
    from mailbridge.core.permissions import Permissions
    from mailbridge.runtime import Runtime
    perms = Permissions(operations=args.operation) if args.operation else None
    created = keys.create_api_key(Runtime().store, tenant_id=args.tenant, name=args.name,
                                  permissions=perms, expires_in=args.expires_in)
    print(json.dumps(created, indent=2))
    return 0


def _renew(args: argparse.Namespace) -> int:
    from mailbridge.core.renewal import INLINE_MAX, renew_due
    from mailbridge.runtime import Runtime
    runtime = Runtime()
    # On the inline bus fanned-out pages would run on this process's threads and die with it:
    # do every due connection here instead, and print real counts. On Pub/Sub, fan out as the function does.
    inline_max = None if runtime.settings.bus == "inline" else INLINE_MAX
    try:
        counts = renew_due(runtime, inline_max=inline_max)
    finally:
        if "bus" in runtime.__dict__:   # webhook deliveries of re-synced mail: give them a minute
            runtime.bus.drain(timeout=60)
            runtime.bus.close()
    print(json.dumps(counts))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailbridge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve every function's routes on one port")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--host", default="127.0.0.1")
    serve.set_defaults(run=_serve)
    renew = sub.add_parser("renew", help="renew Gmail watches and re-sync quiet connections once; prints counts")
    renew.set_defaults(run=_renew)
    keys = sub.add_parser("keys", help="manage API keys against the configured store")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key (and its tenant if new); the key is shown once")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--operation", action="append", choices=typing.get_args(Operation),
                        help="restrict the key to this operation (repeatable)")
    create.add_argument("--expires-in", type=int, default=None, help="seconds until the key expires")
    create.set_defaults(run=_keys_create)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except Exception as exc:  # a CLI user gets one line, never a traceback with state in it
        from mailbridge.errors import MailbridgeError
        if isinstance(exc, MailbridgeError):
            print(f"error: {exc.message}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())

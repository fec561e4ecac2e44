"""`python -m dev.google_emulator --port 8090 --client-id ID --client-secret S --account me@example.com`."""
from __future__ import annotations

import argparse

from werkzeug.serving import make_server

from .app import QuietRequestHandler, create_app
from .notify import push_endpoint_publisher
from .state import EmulatorState


def main(argv: list[str] | None = None) -> None:
    """Run the emulator in the foreground until interrupted; sign-in asks by default."""
    parser = argparse.ArgumentParser(prog="python -m dev.google_emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("--redirect-uri", action="append", default=[],
                        help="accept only these redirect URIs (repeatable; default: any)")
    parser.add_argument("--account", action="append", default=[], help="mailbox address (repeatable)")
    parser.add_argument("--decision", choices=("ask", "approve", "deny"), default="ask")
    parser.add_argument("--push-endpoint", default=None,
                        help="deliver watch notifications as Pub/Sub push envelopes straight to this URL")
    args = parser.parse_args(argv)

    state = EmulatorState(oauth_decision=args.decision)
    if args.push_endpoint:
        state.publisher = push_endpoint_publisher(args.push_endpoint)
    state.add_client(args.client_id, args.client_secret, args.redirect_uri)
    for address in args.account or ["me@example.com"]:
        state.add_account(address)
    server = make_server(args.host, args.port, create_app(state), threaded=True,
                         request_handler=QuietRequestHandler)
    base = f"http://{args.host}:{server.server_port}"
    print(f"Google emulator on {base}  (GOOGLE_AUTH_URL={base}/o/oauth2/v2/auth "
          f"GOOGLE_TOKEN_URL={base}/token GOOGLE_REVOKE_URL={base}/revoke GMAIL_API_ENDPOINT={base})",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        state.close()


if __name__ == "__main__":
    main()

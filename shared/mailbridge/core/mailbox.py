"""The provider adapter of a stored connection: what send, read and sync talk to."""
from __future__ import annotations

from mailbridge.core.tokens import token_source
from mailbridge.errors import ConflictError
from mailbridge.providers.base import MailProvider
from mailbridge.runtime import Runtime


def provider_for(runtime: Runtime, connection: dict) -> MailProvider:
    """A MailProvider for `connection` (a stored record), with tokens refreshed on demand.

    Raises ConflictError (409 conflict) for a disconnected connection, and for Microsoft connections
    until the Graph adapter lands. Building is cheap (clients are cached per instance); no network call."""
    if connection.get("disconnected_ts"):
        raise ConflictError(f"connection {connection['id']} is disconnected; connect the mailbox again",
                            details={"connection_id": connection["id"]})
    provider = connection.get("provider")
    if provider == "google":
        from mailbridge.providers.gmail import GmailProvider
        scopes = tuple(connection.get("scopes") or runtime.settings.google_scopes)
        return GmailProvider(connection["id"], token_source(runtime, connection["id"]), runtime.settings,
                             scopes=scopes)
    raise ConflictError(f"{provider} mailboxes are not available yet", details={"provider": provider})


def profile_with_token(runtime: Runtime, provider: str, access_token: str,
                       scopes: tuple[str, ...] | None = None) -> dict:
    """`{"email", "history_id"}` of the mailbox behind a fresh access token, before any connection
    record exists (the connect callback and import need the address to find the connection)."""
    if provider != "google":
        raise ConflictError(f"{provider} mailboxes are not available yet", details={"provider": provider})
    from mailbridge.providers.gmail import GmailProvider
    adapter = GmailProvider("conn_pending", lambda force=False: access_token, runtime.settings,
                            scopes=tuple(scopes or runtime.settings.google_scopes))
    return adapter.profile()

"""What an API key may do (API.md section 2): operations, visible fields, connections, rate limit."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Operation = Literal[
    "search_emails", "view_email", "view_thread", "send_email", "reply_to_email", "forward_email",
    "delete_email", "mark_as_read", "apply_labels", "manage_connections", "manage_webhooks",
    "manage_api_keys"]

EmailField = Literal[
    "id", "thread_id", "connection_id", "provider", "message_id", "subject", "from", "to", "cc", "bcc",
    "reply_to", "snippet", "text", "html", "sent_at", "received_at", "is_read", "labels", "importance",
    "has_attachments", "attachments", "in_reply_to", "references"]

ALWAYS_VISIBLE = ("id", "thread_id", "connection_id", "provider")
DEFAULT_PER_MINUTE = 300
DEFAULT_PER_HOUR = 5000


class RateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    per_minute: int = Field(DEFAULT_PER_MINUTE, ge=1, le=1_000_000)
    per_hour: int = Field(DEFAULT_PER_HOUR, ge=1, le=100_000_000)


class Permissions(BaseModel):
    """A key's restrictions; a field left out (None) means unrestricted within the tenant."""
    model_config = ConfigDict(extra="forbid")
    operations: list[Operation] | None = None
    visible_fields: list[EmailField] | None = None
    connection_ids: list[str] | None = Field(None, max_length=1000)
    rate_limit: RateLimit | None = None

    def allows(self, operation: str) -> bool:
        return self.operations is None or operation in self.operations

    def sees_connection(self, connection_id: str) -> bool:
        return self.connection_ids is None or connection_id in self.connection_ids

    @property
    def limits(self) -> RateLimit:
        return self.rate_limit or RateLimit()

    @property
    def is_restricted(self) -> bool:
        return any(v is not None for v in (self.operations, self.visible_fields, self.connection_ids))

    def access_info(self) -> dict | None:
        """`access_info` of read responses: each restriction or null; None for an unrestricted key."""
        if not self.is_restricted:
            return None
        return {"operations": self.operations, "visible_fields": self.visible_fields,
                "connection_ids": self.connection_ids}

    def hide_fields(self, email: dict) -> dict:
        """The email with every field outside `visible_fields` set to null (ids always visible)."""
        if self.visible_fields is None:
            return email
        keep = set(self.visible_fields) | set(ALWAYS_VISIBLE)
        return {k: (v if k in keep else None) for k, v in email.items()}

"""Cloud Function `send`: POST /v1/send, reply, forward and the Resend-compatible /resend/emails routes, and GET /healthz."""
from mailbridge.api.app import entry_point

handle = entry_point("send")

"""Cloud Function `read`: GET /v1/messages…, GET /v1/threads…, PATCH/DELETE /v1/messages/{id}, and GET /healthz."""
from mailbridge.api.app import entry_point

handle = entry_point("read")

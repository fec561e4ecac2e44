"""Cloud Function `manage`: /v1/connections…, /v1/webhooks…, /v1/api-keys…, and GET /healthz."""
from mailbridge.api.app import entry_point

handle = entry_point("manage")

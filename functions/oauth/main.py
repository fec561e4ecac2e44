"""Cloud Function `oauth`: POST /v1/connect, GET /oauth/callback/google, GET /oauth/callback/microsoft, and GET /healthz."""
from mailbridge.api.app import entry_point

handle = entry_point("oauth")

"""Cloud Function `renew`: POST /internal/renew (Cloud Scheduler), and GET /healthz."""
from mailbridge.api.app import entry_point

handle = entry_point("renew")

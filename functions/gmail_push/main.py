"""Cloud Function `gmail_push`: POST /push/gmail (Pub/Sub push subscription), and GET /healthz."""
from mailbridge.api.app import entry_point

handle = entry_point("gmail_push")

"""Cloud Function `deliver`: POST /internal/deliver (Pub/Sub push subscription of the delivery topic), and GET /healthz."""
from mailbridge.api.app import entry_point

handle = entry_point("deliver")

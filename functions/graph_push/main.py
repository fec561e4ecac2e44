"""Cloud Function `graph_push`: POST /push/microsoft, POST /push/microsoft/lifecycle, and GET /healthz."""
from mailbridge.api.app import entry_point

handle = entry_point("graph_push")

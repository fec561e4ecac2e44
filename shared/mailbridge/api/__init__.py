"""HTTP layer: one Flask blueprint per Cloud Function, the app factory, auth and the error envelope."""

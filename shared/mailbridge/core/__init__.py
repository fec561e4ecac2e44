"""The domain: models, ids and use cases (send, read, sync, webhooks), tested without HTTP."""

"""The Firestore database (native mode), its TTL policies and its composite indexes."""
from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

DATABASE = "(default)"
# The field the Firestore store writes each expiring document's expiry to (a timestamp).
TTL_FIELD = "ttl"
# Collections whose documents expire (shared/mailbridge/store/base.py marks them "TTL";
# infra/tests checks the two lists agree).
TTL_COLLECTIONS = ("oauth_states", "idempotency", "dedupe", "rate_limits", "leases")

# Composite indexes: (collection, ((field, "ASCENDING" | "DESCENDING"), ...)). The emulator
# needs none, the cloud needs one per query that filters on one field and orders by another.
INDEXES: list[tuple[str, tuple[tuple[str, str], ...]]] = [
    # core/delivery.py list_deliveries: webhook_id ==, newest first (ties by document id)
    ("deliveries", (("webhook_id", "ASCENDING"), ("created_ts", "DESCENDING"), ("__name__", "DESCENDING"))),
    # core/keys.py list_api_keys: tenant_id ==, oldest first
    ("api_keys", (("tenant_id", "ASCENDING"), ("created_ts", "ASCENDING"), ("__name__", "ASCENDING"))),
]


class Firestore(pulumi.ComponentResource):
    """The `(default)` database in native mode, TTL on `ttl` of TTL_COLLECTIONS, and INDEXES.

    `create=False` uses the project's existing `(default)` database (it must be in native mode)
    instead of creating one; `pulumi destroy` never deletes the database or its data.
    """

    def __init__(self, name: str, project: str, location: str, create: bool = True,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mailbridge:infra:Firestore", name, None, opts)
        self.database = None
        database: pulumi.Input[str] = DATABASE
        after_db = pulumi.ResourceOptions(parent=self)
        if create:
            self.database = gcp.firestore.Database(
                f"{name}-database", project=project, name=DATABASE, location_id=location,
                type="FIRESTORE_NATIVE", delete_protection_state="DELETE_PROTECTION_ENABLED",
                deletion_policy="ABANDON", opts=pulumi.ResourceOptions(parent=self))
            database = self.database.name
            after_db = pulumi.ResourceOptions(parent=self, depends_on=[self.database])
        self.ttl_fields = [
            gcp.firestore.Field(
                f"{name}-ttl-{collection}", project=project, database=database,
                collection=collection, field=TTL_FIELD,
                # An empty block turns the TTL policy on; the single-field index stays (reads filter on it).
                ttl_config={}, opts=after_db)
            for collection in TTL_COLLECTIONS
        ]
        self.indexes = [
            gcp.firestore.Index(
                f"{name}-index-{collection}-{'-'.join(f for f, _ in fields)}".replace("_", "-"),
                project=project, database=database, collection=collection,
                fields=[{"field_path": f, "order": order} for f, order in fields], opts=after_db)
            for collection, fields in INDEXES
        ]
        self.register_outputs({"database": database})

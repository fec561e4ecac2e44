"""mailbridge's Pulumi components: APIs, accounts, Firestore, secrets, Pub/Sub, functions, scheduler, gateway."""

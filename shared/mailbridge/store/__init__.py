"""State: one interface (`store.base.Store`), two backends (SQLite and Firestore)."""

"""mailbridge: one provider-agnostic email API over Gmail and Microsoft 365."""

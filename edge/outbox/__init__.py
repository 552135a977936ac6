"""The durable store-wide outbox: intake, store, delivery policy and sender."""

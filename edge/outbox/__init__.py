"""The durable store-wide outbox: transaction model and validation, intake, store, delivery
policy and sender."""

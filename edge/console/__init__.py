"""HTTP surface of the hub: health, readiness and metrics now; the technician console and the
register HTTP API grow here."""

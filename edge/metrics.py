"""Prometheus metrics of the hub, on a registry owned by the app (never the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class Metrics:
    """Every metric the hub exports. One instance per app, built by edge.app."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.build = Info("edge_build", "Hub version and identity.", registry=r)
        self.bus_connected = Gauge(
            "edge_bus_connected", "1 while the hub is connected to its broker.", registry=r
        )
        self.bus_connects = Counter(
            "edge_bus_connects", "Successful connections to the broker.", registry=r
        )
        self.bus_connection_failures = Counter(
            "edge_bus_connection_failures",
            "Connection attempts that failed or connections that were lost.",
            registry=r,
        )
        self.requests = Counter(
            "edge_requests",
            "Requests answered, by method and outcome (ok or an error code).",
            ["method", "outcome"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "edge_request_duration_seconds",
            "Time from receiving a request to publishing its reply.",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.requests_unanswerable = Counter(
            "edge_requests_unanswerable",
            "Requests dropped because they carried no response topic.",
            registry=r,
        )
        self.requests_inflight = Gauge(
            "edge_requests_inflight", "Requests being handled now.", registry=r
        )
        self.broker_up = Gauge(
            "edge_broker_up", "1 while the managed broker accepts connections.", registry=r
        )
        self.broker_restarts = Counter(
            "edge_broker_restarts", "Times the managed broker was restarted.", registry=r
        )
        self.outbox_accepted = Counter(
            "edge_outbox_accepted",
            "Transactions durably accepted (first time; re-sends not counted).",
            registry=r,
        )
        self.outbox_delivered = Counter(
            "edge_outbox_delivered", "Items the cloud confirmed.", registry=r
        )
        self.outbox_parked = Counter(
            "edge_outbox_parked", "Items the cloud rejected (parked for review).", registry=r
        )
        self.outbox_retries = Counter(
            "edge_outbox_retries",
            "Delivery attempts to retry later, by kind.",
            ["kind"],
            registry=r,
        )
        self.lanes = Gauge("edge_lanes", "Registers by lifecycle state.", ["state"], registry=r)
        self.outbox_pending = Gauge(
            "edge_outbox_pending", "Items waiting for delivery.", registry=r
        )
        self.outbox_parked_now = Gauge(
            "edge_outbox_parked_items", "Items parked now, waiting for a technician.", registry=r
        )
        self.outbox_oldest_age = Gauge(
            "edge_outbox_oldest_pending_age_seconds",
            "Age of the oldest undelivered item (0 when empty).",
            registry=r,
        )
        self.outbox_breaker_open = Gauge(
            "edge_outbox_breaker_open", "1 while the WAN circuit breaker is open.", registry=r
        )
        self.outbox_db_bytes = Gauge(
            "edge_outbox_db_bytes", "Size of the outbox file and its WAL.", registry=r
        )
        self.disk_free_bytes = Gauge(
            "edge_state_disk_free_bytes",
            "Free space of the state directory's filesystem.",
            registry=r,
        )

"""Prometheus metrics, in a registry of their own (so several bridges can live in one test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.received = Counter("baochay_received", "Messages received from devices", ["kind"], registry=r)
        self.rejected = Counter("baochay_rejected", "Messages rejected, by reason", ["reason"], registry=r)
        self.dropped = Counter("baochay_dropped", "Messages dropped over their device's limits, by kind",
                               ["kind"], registry=r)
        self.duplicates = Counter("baochay_duplicates", "Events received again (re-acked)", registry=r)
        self.conflicts = Counter("baochay_conflicts", "Events refused: a stored event's id with other bytes",
                                 registry=r)
        self.late = Counter("baochay_late", "Events stored and forwarded late (below their install's highest "
                            "counter)", registry=r)
        self.new_epochs = Counter("baochay_new_epochs", "Devices that began a new install (re-flashed, "
                                  "counter started again)", registry=r)
        self.stored = Counter("baochay_stored", "Events stored durably", registry=r)
        self.acks = Counter("baochay_acks", "Acks published to devices", ["stage"], registry=r)
        self.deliveries = Counter("baochay_deliveries", "Delivery attempts by outcome", ["sink", "outcome"],
                                  registry=r)
        self.backlog = Gauge("baochay_backlog", "Reports waiting in each sink's outbox", ["sink"], registry=r)
        self.store_queue = Gauge("baochay_store_queue", "Items waiting for the store writer", registry=r)
        self.devices = Gauge("baochay_devices", "Registered devices by presence", ["state"], registry=r)
        self.broker_up = Gauge("baochay_broker_up", "1 while the bridge is connected to its broker", registry=r)
        self.storage_ok = Gauge("baochay_storage_ok", "0 while the database cannot be written (the storage "
                                "fault)", registry=r)
        self.store_dropped = Counter("baochay_store_dropped", "Telemetry and bookkeeping not kept while the "
                                     "storage failed (events are never dropped)", registry=r)
        self.db_bytes = Gauge("baochay_db_bytes", "Size of the database on disk, with its write-ahead log",
                              registry=r)
        self.callouts = Counter("baochay_callouts", "Contact messages about alarms, by outcome (sent, "
                                "send_failed, acked)", ["outcome"], registry=r)
        self.ota_devices = Gauge("baochay_ota_devices", "Devices in running or paused rollouts, by their update "
                                 "state (docs/ota.md)", ["state"], registry=r)
        self.faults_open = Gauge("baochay_faults_open", "Open operator faults", registry=r)
        self.tests_missed = Gauge("baochay_tests_missed", "Devices whose periodic test is overdue (the "
                                  "test-missed fault)", registry=r)
        self.delivery_latency = Histogram(
            "baochay_delivery_latency_seconds", "Receipt at the bridge -> accepted by the sink", ["sink"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 100), registry=r)

    def serve(self, host: str, port: int):
        """Serve /metrics on host:port (loopback by default); returns the server."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server

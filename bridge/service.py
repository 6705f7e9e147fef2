"""The running bridge: wires the MQTT link, the pipeline (bridge/pipeline.py), the workers and supervision.

Threads: paho's network loop (pipeline.admit: cheap), the store writer (group commit, acks `stored`),
one delivery worker per sink (acks `forwarded`/`accepted`/`failed`), and the supervision ticker
(presence, health, gauges). Acks are published from the worker threads; paho 2 allows that.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

from firmware import protocol_host
from firmware.protocol_host import Refused

from . import __version__, db, pipeline, sinks
from .clock import BridgeClock, record_offset
from .ingest import MqttLink
from .limits import KINDS, UNREGISTERED, Drops, Limits
from .metrics import Metrics
from .notify import build_notifier
from .ota.worker import OtaWorker
from .registry import Registry
from .stages.ack import ack_frame, ack_topic
from .stages.authenticate import DUPLICATE, FORGOTTEN, LATE, NEW
from .stages.deliver import DeliveryPolicy
from .stages.enrich import LocationPolicy
from .stages.parse import read_status, read_telemetry
from .stages.verify import VerifyPolicy
from .storage import StateFile, StorageHealth, state_file_path
from .workers.callouts import CalloutWorker, open_callout
from .workers.delivery import CLAIM_S, DeliveryWorker
from .workers.flood_watch import FloodWatch
from .workers.storage_watch import StorageWatch
from .workers.store_writer import Incoming, StoredResult, StoreWriter
from .workers.supervision import Presence, Ticker, apply_birth, apply_telemetry, apply_transitions
from .workers.test_watch import TestWatch

# The MQTT thread gives up the GIL on every socket call and then waits for a busy thread's time slice
# to end before it runs again: short slices keep ingest (and so the `stored` ack) moving while delivery
# works.
SWITCH_INTERVAL_S = 0.0005
# After a (re)start, recent events get their current stage acked again (see _reannounce).
REANNOUNCE_S = 600

log = logging.getLogger("bridge")
lifecycle = logging.getLogger("bridge.lifecycle")


class Bridge:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.bridge_id = cfg["bridge_id"]
        self.metrics = Metrics()
        self.max_payload = int(cfg["limits"]["max_payload"])
        sinks.SINK_TYPES.update(cfg.get("sink_types") or {})
        self.registry = Registry(cfg["db"])
        self.sinks = []
        lanes: list[list] = []  # per sink: one sink instance per worker (sinks need not be thread-safe)
        for s in cfg["sinks"]:
            opts = {k: v for k, v in s.items() if k not in ("name", "type", "workers")}
            n = max(1, int(s.get("workers", cfg["delivery"]["workers"])))
            lane = [sinks.build_sink(s["name"], s["type"], **opts) for _ in range(n)]
            self.sinks.append(lane[0])
            lanes.append(lane)
        sup = cfg["supervision"]
        self.clock = BridgeClock()  # every deadline and sign of life is read on it (bridge/clock.py)
        self.presence = Presence({"mains": sup["mains_s"], "battery": sup["battery_s"]}, started_at=self.clock())
        self.conn = db.connect(cfg["db"], durable=False)  # the supervision thread's own connection
        self.presence.load(self.conn)
        self.shared = bool(cfg["mqtt"].get("shared_group"))
        self.storage_health = StorageHealth()  # who cannot write the database, since when
        self.writer = StoreWriter(cfg["db"], self.sinks, self._on_stored,
                                  batch_max=int(cfg["store"]["batch_max"]), on_commit=self._on_commit,
                                  building_of=self._building, health=self.storage_health,
                                  max_backlog=int(cfg["store"]["max_backlog"]),
                                  on_alarm=open_callout if cfg["notify"]["type"] else None)
        d, loc, ver = cfg["delivery"], cfg["location"], cfg["verify"]
        policy = DeliveryPolicy(max_age_s=float(d["max_age_s"]), backoff_initial_s=float(d["backoff_initial_s"]),
                                backoff_max_s=float(d["backoff_max_s"]), jitter=float(d["jitter"]),
                                horizon_s=float(d["horizon_s"]), late_backoff_max_s=float(d["late_backoff_max_s"]))
        self.workers = [
            DeliveryWorker(s, cfg["db"], self.registry, acked=(s.name == cfg["accepted_from"]),
                           on_stage=self._publish_ack, policy=policy,
                           location=LocationPolicy(float(loc["gps_max_age_s"]), float(loc["gps_max_acc_m"])),
                           verify_policy=VerifyPolicy(float(ver["window_s"]), float(ver["offline_window_s"])),
                           metrics=self.metrics, part=(i, len(lane)), claim_s=CLAIM_S if self.shared else 0.0,
                           clock=self.clock, health=self.storage_health)
            for lane in lanes for i, s in enumerate(lane)
        ]
        self._first_workers = {w.name_: w for w in reversed(self.workers)}  # one per sink, for gauges
        n = cfg["notify"]
        self.callouts = None if not n["type"] else CalloutWorker(
            cfg["db"], build_notifier(n["type"], **n["options"]), self.registry, ack_s=float(n["ack_s"]),
            metrics=self.metrics)
        self.link = MqttLink(cfg["mqtt"], self.bridge_id, __version__, self._on_message)
        # firmware updates (bridge/ota/worker.py): only where bundles can be checked, with a release key
        self.ota = OtaWorker(cfg, self.registry, self.metrics) if cfg["ota"]["release_key"] else None
        self.limits = Limits(cfg["limits"]["rates"])  # used on paho's thread only
        self.drops = Drops()
        self.flood = FloodWatch(self.drops, self.writer, float(cfg["limits"]["flood_clear_s"]))
        self._received = {k: self.metrics.received.labels(k) for k in protocol_host.DEVICE_KINDS}
        self._dropped = {k: self.metrics.dropped.labels(k) for k in KINDS}
        self._stopping = threading.Event()
        self._metrics_server = None
        self._counts = {"received": 0, "stored": 0}
        self.storage = StorageWatch(cfg["store"], cfg["db"], self.bridge_id, health=self.storage_health,
                                    writer=self.writer, metrics=self.metrics, state_file=self._state_file())
        self._ticker = Ticker(cfg, self.bridge_id, __version__, registry=self.registry, presence=self.presence,
                              writer=self.writer, metrics=self.metrics, conn=self.conn,
                              backlogs=self._first_workers, counts=self._counts, publish=self.link.publish,
                              shared=self.shared, stopping=self._stopping, clock=self.clock, link=self.link,
                              storage=self.storage, flood=self.flood,
                              tests=TestWatch(sup, self.writer, self.metrics), ota=self.ota)
        self._reject_log: dict[str, tuple[float, int]] = {}  # reason -> (last logged, not logged since)

    def _state_file(self) -> StateFile | None:
        try:
            return StateFile(state_file_path(self.cfg["db"], self.bridge_id))
        except OSError as e:  # the disk may be full already: run without it, and say so
            log.error("cannot create the state file; `status` will not see a storage fault",
                      extra={"detail": str(e)})
            return None

    # --- lifecycle ---
    def start(self) -> None:
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.writer.start()
        self.writer.started_ok.wait(10)
        self.writer.submit(lambda conn: record_offset(conn, self.clock.base))  # what the stored times follow
        for w in self.workers:
            w.start()
        if self.callouts is not None:
            self.callouts.start()
        if self.ota is not None:
            self.ota.start()
        for w in self._first_workers.values():
            self.metrics.backlog.labels(w.name_).set(w.backlog(self.conn))
        m = self.cfg["metrics"]
        if m.get("port"):
            self._metrics_server = self.metrics.serve(m.get("host", "127.0.0.1"), int(m["port"]))
            log.info("metrics served", extra={"url": f"http://{m.get('host', '127.0.0.1')}:{m['port']}/metrics"})
        self._ticker.start()
        self.link.start()
        threading.Thread(target=self._reannounce, name="reannounce", daemon=True).start()
        lifecycle.info("bridge starting", extra={"bridge_id": self.bridge_id, "version": __version__, "db": self.cfg["db"],
                                           "sinks": [s.name for s in self.sinks],
                                           "accepted_from": self.cfg["accepted_from"]})

    def _reannounce(self) -> None:
        """After a start, publish again the stage of every recent event: an ack lost when the bridge
        was killed between its commit and its publish reaches the device now (devices ignore a
        stage they already have)."""
        if not self.link.ready.wait(30) or self._stopping.is_set():
            return
        since = self.clock() - REANNOUNCE_S
        stages = protocol_host.ACK_STAGES
        conn = db.connect(self.cfg["db"], durable=False)
        try:
            rows = conn.execute("SELECT dev, id, stage, incident, reason FROM events WHERE received_at >= ?"
                                f" AND stage IN ({','.join('?' for _ in stages)})", (since, *stages)).fetchall()
        finally:
            conn.close()
        for r in rows:
            self._publish_ack(r["dev"], r["id"], r["stage"], r["incident"], r["reason"])
        if rows:
            log.info("stages announced again after start", extra={"events": len(rows)})

    def stop(self) -> None:
        """Store what was received, let workers finish their current send, then say offline."""
        self._stopping.set()
        self.writer.stop()
        self.writer.join(15)
        for w in self.workers:
            w.stop()
        for w in self.workers:
            w.join(15)
        if self.callouts is not None:
            self.callouts.stop()
            self.callouts.join(10)
        if self.ota is not None:
            self.ota.stop()
        self._ticker.join(5)
        self.link.stop()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        self.registry.close()
        self.conn.close()
        if self.storage.state_file is not None:
            self.storage.state_file.close()
        lifecycle.info("bridge stopped")

    # --- ingest (paho's network thread: keep it cheap) ---
    def _key(self, dev: str):
        d = self.registry.get(dev)
        return d.key if d is not None else None

    def _building(self, dev: str) -> str:
        d = self.registry.get(dev)
        return d.building if d is not None else ""

    def _on_message(self, msg) -> None:
        now = self.clock()
        self._counts["received"] += 1
        try:
            dev, kind = protocol_host.split_topic(msg.topic)
        except Refused as r:
            self._reject(r, UNREGISTERED, msg)
            return
        self._received[kind].inc()
        d = self.registry.get(dev)
        if d is None:
            self._reject(Refused("unknown-device"), dev, msg, bucket=UNREGISTERED)
            return
        if kind == "status" and msg.retain:
            # a retained status replayed at subscribe time is old news, not a sign of life
            if self.limits.take(dev, kind, d.supervision):
                self._status(dev, msg.payload, now, live=False)
            self.link.settle_now(msg)
            return
        t = self.presence.seen(dev, now)
        if t is not None:
            self.writer.submit(lambda conn: apply_transitions(conn, [t]))
        if kind == "event":  # never limited: verified, stored, or refused for what it is
            try:
                frame, event = pipeline.admit(msg.topic, msg.payload, self._key, self.max_payload)
            except Refused as r:
                self._reject(r, dev, msg, cls=d.supervision)
                return
            self.writer.submit_event(Incoming(frame, event, now, self.link.settler(msg)))
            return
        if not self.limits.take(dev, kind, d.supervision):
            self._drop(dev, kind, msg)
            return
        if kind == "telemetry":
            try:
                body = read_telemetry(msg.payload, dev, self.max_payload)
            except Refused as r:
                self._reject(r, dev, msg, cls=d.supervision)
                return
            low = float(self.cfg["supervision"]["low_battery_pct"])
            self.writer.submit(lambda conn: apply_telemetry(conn, dev, body, low, now), droppable=True)
        else:
            try:
                self._status(dev, msg.payload, now, live=True)
            except Refused as r:
                self._reject(r, dev, msg, cls=d.supervision)
                return
        self.link.settle_now(msg)

    def _drop(self, dev: str, kind: str, msg=None) -> None:
        """Over the device's limit: dropped before any parsing, counted (bridge/workers/flood_watch.py)."""
        self._dropped[kind].inc()
        self.drops.dropped(dev, kind)
        if msg is not None:
            self.link.settle_now(msg)

    def _status(self, dev: str, payload: bytes, now: float, live: bool) -> None:
        """A status payload; Refused when it is not a valid status body (a retained one is only skipped:
        it was judged when it was live)."""
        try:
            s = read_status(payload, dev, self.max_payload)
        except Refused:
            if live:
                raise
            return
        if s.get("state") == "offline":
            t = self.presence.gone(dev, now, "connection lost (last will)" if live else "offline (retained status)")
            if t is not None:
                self.writer.submit(lambda conn: apply_transitions(conn, [t]))
        elif s.get("state") == "online":
            self.writer.submit(lambda conn: apply_birth(conn, dev, s), droppable=True)

    def _reject(self, r: Refused, dev: str, msg, cls: str = "mains", bucket: str | None = None) -> None:
        """Refused: counted (in memory, written once a tick), a log line per reason every 10 s at most,
        and over the device's `rejected` limit only counted as dropped."""
        self.link.settle_now(msg)
        if not self.limits.take(bucket or dev, "rejected", cls):
            self._drop(bucket or dev, "rejected")
            return
        self.metrics.rejected.labels(r.reason).inc()
        self.drops.rejected(r.reason, dev)
        now = time.monotonic()
        said = self._reject_log.get(r.reason)
        if said is None or now - said[0] > 10:  # a flood of junk must not flood the log
            self._reject_log[r.reason] = (now, 0)
            log.warning("message rejected", extra={"reason": r.reason, "detail": r.detail, "device": dev,
                                                   "topic": msg.topic[:120],
                                                   "more_not_logged": said[1] if said else 0})
        else:
            self._reject_log[r.reason] = (said[0], said[1] + 1)

    # --- after commit (store writer thread) ---
    def _on_commit(self, n: int) -> None:
        self.metrics.store_queue.set(self.writer.backlog())

    def _on_stored(self, res: StoredResult) -> None:
        if res.verdict in (NEW, LATE):
            self._counts["stored"] += 1
            self.metrics.stored.inc()
            self._publish_ack(res.dev, res.event_id, "stored", None, None)
            for w in self.workers:
                w.wake.set()
            if self.callouts is not None:
                self.callouts.wake.set()
            if res.late:
                self.metrics.late.inc()
                log.warning("event stored late", extra={"device": res.dev, "event": res.event_id,
                                                        "detail": res.late})
            if res.new_epoch is not None:
                self.metrics.new_epochs.inc()
                log.warning("device began a new install: re-flashed or its filesystem wiped; its counter "
                            "starts again", extra={"device": res.dev, "event": res.event_id,
                                                   "detail": f"epoch {res.new_epoch or '(none)'} -> "
                                                             f"{(res.event or {}).get('ep') or '(none)'}"})
        elif res.verdict == DUPLICATE:
            self.metrics.duplicates.inc()
            self._publish_ack(res.dev, res.event_id, res.stage or "stored", res.incident, res.reason)
        elif res.verdict == FORGOTTEN:
            self.metrics.rejected.labels(FORGOTTEN).inc()
            log.warning("event refused: older than what the database keeps (store.retain_days), so a replay "
                        "cannot be told apart", extra={"device": res.dev, "event": res.event_id})
        else:
            self.metrics.conflicts.inc()
            self.metrics.rejected.labels("conflict").inc()
            log.warning("event refused: its id is stored with other bytes", extra={"device": res.dev,
                                                                                   "event": res.event_id})

    def _publish_ack(self, dev: str, event_id: str, stage: str, incident, reason) -> None:
        key = self._key(dev)
        if key is None:
            return
        self.link.publish(ack_topic(dev), ack_frame(key, event_id, stage, incident=incident, reason=reason), qos=1)
        self.metrics.acks.labels(stage).inc()

"""The OTA worker: carries out the rollouts in the database (bridge/ota/rollout.py) and serves the
bundles' bytes to the devices downloading them.

Its own MQTT connection (persistent session, so a device's `pending`, `confirmed` or `rolled-back`
report waits at the broker while the bridge restarts), apart from the alarm path: a download never
queues in front of an alarm. A device asks for the chunk at an offset on its `ota` topic; the chunk
goes back on its `otadata` topic as 4 bytes of offset and the bytes. Offers and confirmations are
signed commands, as every command is.

Each tick (a second) it offers the bundle to the next devices (the canary first; the rest once the
canary is through), offers again what stalled, confirms a pending device once the bridge has seen the
new version's birth and a stored self-test, and halts a rollout whose failures pass its threshold.
"""

from __future__ import annotations

import json
import logging
import queue
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from firmware import protocol_host

from .. import db
from ..clock import BridgeClock
from ..commands import next_ctr
from ..registry import Registry
from ..stages.ack import cmd_topic, command_frame
from . import rollout as ro
from .bundle import BundleError, read_bundle

log = logging.getLogger("bridge.ota")

# A device that reboots this often while it downloads is failed rather than offered it again: on a
# stock ESP32 a download can run it out of memory, and every try takes it offline (docs/ota.md).
MAX_REBOOTS = 3
ACTIVE = ("queued", "offered", "downloading", "waiting", "pending", "confirming")


class OtaWorker:
    def __init__(self, cfg: dict, registry: Registry, metrics=None):
        self.cfg = cfg
        self.ocfg = cfg["ota"]
        self.registry = registry
        self.metrics = metrics
        self.chunk = int(self.ocfg["chunk"])
        self._payloads: dict[str, bytes] = {}  # sha256 -> payload bytes of an uploaded bundle
        self._progress: dict[str, tuple[str, int, int]] = {}  # dev -> (sha, off, size), flushed each tick
        self._reports: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.conn = db.connect(cfg["db"], durable=False)
        m = cfg["mqtt"]
        c = self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{m['client_id']}-ota",
                                      protocol=mqtt.MQTTv5)
        if m.get("user"):
            c.username_pw_set(m["user"], m.get("password") or None)
        if m.get("tls"):
            c.tls_set(ca_certs=m.get("ca_file") or None)
        c.reconnect_delay_set(1, 5)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        self.summary: dict = {}  # for health: the running rollouts and their counts
        self.clock = BridgeClock()  # the times the events table is written in

    # -- life ---------------------------------------------------------------------------------
    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = int(self.cfg["mqtt"].get("session_expiry_s", 86400))
        self.client.connect_async(self.cfg["mqtt"]["host"], int(self.cfg["mqtt"]["port"]),
                                  keepalive=int(self.cfg["mqtt"].get("keepalive", 30)), clean_start=False,
                                  properties=props)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, name="ota", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        self.client.disconnect()
        self.client.loop_stop()
        self.conn.close()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("ota: mqtt connect refused", extra={"reason": str(reason_code)})
            return
        client.subscribe([(protocol_host.every(protocol_host.OTA_REQUEST), SubscribeOptions(qos=1))])

    # -- the devices' side (paho's thread) ------------------------------------------------------
    def _on_message(self, client, userdata, msg) -> None:
        try:
            dev, _ = protocol_host.split_topic(msg.topic, (protocol_host.OTA_REQUEST,))
            body = json.loads(msg.payload)
            if not isinstance(body, dict) or body.get("v") != protocol_host.VERSION:
                raise ValueError("not an ota report")
            state, sha = body.get("state"), body.get("sha256")
        except (ValueError, protocol_host.Refused, UnicodeDecodeError):
            log.warning("ota: unreadable report", extra={"topic": msg.topic[:80]})
            return
        if self.registry.get(dev) is None:
            return
        if state == "downloading" and isinstance(sha, str) and isinstance(body.get("off"), int):
            self._send_chunk(dev, sha, body["off"])
            self._progress[dev] = (sha, body["off"], int(body.get("size") or 0))
            return
        self._reports.put((dev, body))

    def _load_payload(self, sha: str) -> None:
        """The worker's thread reads a rollout's bundle, once; paho's thread only looks it up."""
        if sha in self._payloads:
            return
        row = self.conn.execute("SELECT path FROM ota_bundles WHERE sha256=?", (sha,)).fetchone()
        if row is None:
            return
        try:
            self._payloads[sha] = read_bundle(row["path"], ro.release_key(self.cfg)).payload
        except (ro.OtaError, BundleError, OSError) as e:
            log.error("ota: stored bundle unreadable", extra={"sha256": sha, "error": str(e)})

    def _send_chunk(self, dev: str, sha: str, off: int) -> None:
        p = self._payloads.get(sha)
        if p is None or not 0 <= off < len(p):
            return
        data = off.to_bytes(4, "big") + p[off:off + self.chunk]
        self.client.publish(protocol_host.topic(dev, protocol_host.OTA_DATA), data, qos=0)

    # -- the rollouts (the worker's thread) -----------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as e:  # the next tick tries again; the rollout is in the database
                log.error("ota: tick failed", extra={"error": f"{type(e).__name__}: {e}"})
            self._stop.wait(float(self.ocfg["tick_s"]))

    def tick(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        c = self.conn
        self._flush_progress(now)
        while True:
            try:
                dev, body = self._reports.get_nowait()
            except queue.Empty:
                break
            self._report(dev, body, now)
        summary = {}
        for r in c.execute("SELECT * FROM ota_rollouts WHERE state IN ('running','paused') ORDER BY id").fetchall():
            summary[r["id"]] = self._step(r, now)
        self.summary = summary
        if self.metrics is not None:
            totals = dict.fromkeys(ro.DEVICE_STATES, 0)
            for part in summary.values():
                for k, n in part["counts"].items():
                    totals[k] = totals.get(k, 0) + n
            for k, n in totals.items():
                self.metrics.ota_devices.labels(k).set(n)

    def _flush_progress(self, now: float) -> None:
        prog, self._progress = self._progress, {}
        for dev, (sha, off, size) in prog.items():
            self.conn.execute(
                "UPDATE ota_devices SET state='downloading', off=?, size=?, updated_at=? WHERE dev=? AND state IN "
                "('offered','downloading','waiting') AND rollout IN (SELECT r.id FROM ota_rollouts r JOIN "
                "ota_bundles b ON b.version=r.version WHERE b.sha256=?)", (off, size, now, dev, sha))

    def _row(self, dev: str, version: str | None):
        q = ("SELECT d.*, r.version FROM ota_devices d JOIN ota_rollouts r ON r.id=d.rollout WHERE d.dev=? "
             "AND d.state IN ({}) ".format(",".join("?" * len(ACTIVE))))
        args: list = [dev, *ACTIVE]
        if version:
            q += "AND r.version=? "
            args.append(version)
        return self.conn.execute(q + "ORDER BY d.rollout DESC LIMIT 1", args).fetchone()

    def _set(self, row, state: str, now: float, reason: str | None = None, **cols) -> None:
        sets = ", ".join(f"{k}=?" for k in cols)
        self.conn.execute(f"UPDATE ota_devices SET state=?, reason=?, updated_at=?{', ' + sets if sets else ''} "
                          "WHERE rollout=? AND dev=?", (state, reason, now, *cols.values(), row["rollout"], row["dev"]))
        log.info("ota: device", extra={"device": row["dev"], "rollout": row["rollout"], "state": state,
                                       "reason": reason or ""})

    def _report(self, dev: str, body: dict, now: float) -> None:
        """What a device said of an update: refused, waiting, failed, pending, confirmed, rolled-back."""
        state = body.get("state")
        version = body.get("version") if isinstance(body.get("version"), str) else None
        row = self._row(dev, version)
        if row is None:
            return
        reason = " ".join(str(body.get(k)) for k in ("reason", "detail") if body.get(k))[:200] or None
        if state == "refused":
            if body.get("reason") == "busy":
                self._set(row, "waiting", now, reason)
            else:
                self._set(row, "refused", now, reason)
        elif state == "waiting":
            self._set(row, "waiting", now, reason)
        elif state == "failed":
            self._set(row, "failed", now, reason)
        elif state == "pending":
            self._set(row, "pending", now, None, off=row["size"] or row["off"], pending_at=now)
        elif state == "confirmed":
            self._set(row, "confirmed", now, None)
        elif state == "rolled-back":
            self._set(row, "rolled-back", now, reason)

    def _step(self, r, now: float) -> dict:
        """One rollout: offers, confirmations, stalls, the halt; returns its counts."""
        c = self.conn
        bundle = c.execute("SELECT * FROM ota_bundles WHERE version=?", (r["version"],)).fetchone()
        devs = c.execute("SELECT d.*, s.online, s.fw, s.boot, s.last_seen FROM ota_devices d LEFT JOIN device_state s "
                         "ON s.id=d.dev WHERE d.rollout=?", (r["id"],)).fetchall()
        counts: dict[str, int] = {}
        for d in devs:
            counts[d["state"]] = counts.get(d["state"], 0) + 1
        if bundle is None:
            return {"version": r["version"], "state": r["state"], "counts": counts}
        self._load_payload(bundle["sha256"])
        offering = r["state"] == "running"  # paused: no new offers, but what is installed gets confirmed
        canary = [d for d in devs if d["canary"]]
        canary_open = any(d["state"] not in ro.FINAL for d in canary)
        # the halt: failures in the canary, then in the whole rollout, beyond those an operator
        # accepted by resuming a halted rollout
        limit = float(r["max_fail_pct"])
        for pool, label in ((canary, "canary "), (devs, "")):
            failed = [d for d in pool if d["state"] in ro.FAILURES]
            n_failed = len(failed) - int(r["accepted_failures"])
            if offering and pool and n_failed > 0 and 100 * n_failed / len(pool) > limit:
                why = (f"{len(failed)} of {len(pool)} {label}devices failed or rolled back (limit {limit:g}%): "
                       + "; ".join(f"{d['dev']}: {d['reason'] or d['state']}" for d in failed[:3]))
                c.execute("UPDATE ota_rollouts SET state='halted', reason=?, updated_at=? WHERE id=?", (why, now, r["id"]))
                c.execute("UPDATE ota_devices SET state='skipped', reason='rollout halted', updated_at=? WHERE "
                          "rollout=? AND state='queued'", (now, r["id"]))
                log.error("ota: rollout halted", extra={"rollout": r["id"], "reason": why})
                return {"version": r["version"], "state": "halted", "counts": counts}
        stall = float(self.ocfg["stall_s"])
        boards = json.loads(bundle["boards"])
        for d in devs:
            st = d["state"]
            if st in ro.FINAL or (canary_open and not d["canary"]):
                continue
            online = bool(d["online"])
            if not offering and st in ("queued", "offered", "downloading", "waiting"):
                continue
            if st == "queued":
                dev = self.registry.get(d["dev"])
                if dev is None:
                    self._set(d, "skipped", now, "no longer registered")
                elif d["fw"] == r["version"]:
                    self._set(d, "confirmed", now, "already on this version")
                elif dev.board and dev.board not in boards:
                    self._set(d, "refused", now, f"wrong-board: {dev.board} is not one of {', '.join(boards)}")
                elif online:
                    self._offer(d, bundle, now)
            elif d["offered_at"] and (fail := self._update_failed_since(d["dev"], d["offered_at"])):
                self._set(d, "rolled-back", now, fail)  # the device's own fault event says why
            elif st in ("offered", "downloading", "waiting"):
                reboots = (d["boot"] or 0) - d["boot_at_offer"] if d["boot_at_offer"] is not None else 0
                if reboots >= MAX_REBOOTS:  # whatever makes it reboot (no memory, a crash): not again
                    self._set(d, "failed", now, f"rebooted {reboots} times during the download")
                elif online and now - (d["updated_at"] or 0) > stall:
                    self._offer(d, bundle, now)  # lost, or the device rebooted: it resumes from its offset
            elif st == "pending":
                if d["fw"] == r["version"] and online and self._proved(d):
                    self._confirm(d, r["version"], now)
                elif now - (d["pending_at"] or now) > int(self.ocfg["confirm_s"]) + stall:
                    self._set(d, "failed", now, "the new version was never seen online")
            elif st == "confirming" and now - (d["updated_at"] or 0) > stall:
                self._confirm(d, r["version"], now)
        if offering and all(d["state"] in ro.FINAL for d in devs):
            c.execute("UPDATE ota_rollouts SET state='done', updated_at=? WHERE id=?", (now, r["id"]))
        return {"version": r["version"], "state": r["state"], "counts": counts}

    def _update_failed_since(self, dev: str, since: float) -> str | None:
        """The detail of an `update-failed` fault the device raised since `since` (it rolled back, or
        went into safe mode), or None."""
        row = self.conn.execute("SELECT body FROM events WHERE dev=? AND type='fault' AND cause='update-failed' AND "
                                "received_at>=? ORDER BY seq DESC LIMIT 1", (dev, since)).fetchone()
        if row is None:
            return None
        try:
            return str(json.loads(bytes(row["body"]))["data"].get("detail") or "update failed")[:200]
        except (ValueError, KeyError, TypeError, AttributeError):
            return "update failed"

    def _proved(self, d) -> bool:
        """The new version's self-test, stored since it became pending, is no worse than the last
        one stored before the offer (ro.no_worse): a device whose sensor was already broken can still
        be given the version that may fix it, one that breaks a working check is not confirmed."""
        new = self._selftest(d["dev"], ">=", d["pending_at"] or 0)
        return new is not None and ro.no_worse(new, self._selftest(d["dev"], "<", d["offered_at"] or 0))

    def _selftest(self, dev: str, op: str, at: float) -> dict | None:
        """The data of the latest stored self-test received at or after (op '>=') or before ('<') `at`."""
        assert op in (">=", "<")
        row = self.conn.execute("SELECT body FROM events WHERE dev=? AND type='test' AND cause='selftest' AND "
                                f"received_at{op}? ORDER BY seq DESC LIMIT 1", (dev, at)).fetchone()
        if row is None:
            return None
        try:
            data = json.loads(bytes(row["body"]))["data"]
            return data if isinstance(data, dict) else None
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def _command(self, dev: str, cmd: str, args: dict) -> bool:
        device = self.registry.get(dev)
        if device is None or not self.client.is_connected():
            return False
        ctr = next_ctr(self.cfg["db"], dev)
        self.client.publish(cmd_topic(dev), command_frame(device.key, cmd, ctr, args), qos=1)
        return True

    def _offer(self, d, bundle, now: float) -> None:
        args = {"version": bundle["version"], "sv": bundle["security_version"], "size": bundle["size"],
                "sha256": bundle["sha256"], "boards": json.loads(bundle["boards"]), "min_base": bundle["min_base"],
                "confirm_s": int(self.ocfg["confirm_s"])}
        if self._command(d["dev"], "ota", args):
            self._set(d, "offered" if d["state"] == "queued" else d["state"], now, d["reason"],
                      offered_at=d["offered_at"] or now, size=bundle["size"],
                      boot_at_offer=d["boot"] if d["boot_at_offer"] is None else d["boot_at_offer"])

    def _confirm(self, d, version: str, now: float) -> None:
        if self._command(d["dev"], "ota", {"confirm": version}):
            self._set(d, "confirming", now, None)

"""Bridge configuration: a YAML file, then BAOCHAY_* environment overrides, checked into a plain dict.

Environment: BAOCHAY_<KEY> for a top-level key, BAOCHAY_<SECTION>__<KEY> for a nested one (double
underscore), values read as YAML scalars: BAOCHAY_MQTT__PORT=1884, BAOCHAY_MQTT__PASSWORD=secret,
BAOCHAY_DB=/var/lib/baochay/bridge.db. Every key is documented in docs/operator-guide.md.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml

from firmware import protocol

DEFAULTS: dict = {
    "bridge_id": "bridge-1",
    "db": "var/bridge.db",
    "log_level": "info",
    "mqtt": {
        "host": "127.0.0.1",
        "port": 1883,
        "user": "bridge",
        "password": "",
        "tls": False,
        "ca_file": None,
        "client_id": None,  # default: baochay-bridge-<bridge_id>
        "shared_group": None,
        "keepalive": 30,
        "session_expiry_s": 86400,
    },
    # rates: per device and supervision class, [per second, burst] of telemetry, status and rejected
    # messages (bridge/limits.py); events are never limited. flood_clear_s: a device's `flood` fault
    # clears after this long within its limits.
    "limits": {"max_payload": protocol.MAX_PAYLOAD,
               "rates": {"mains": {"telemetry": [1, 30], "status": [0.5, 10], "rejected": [1, 30]},
                         "battery": {"telemetry": [1, 30], "status": [0.5, 10], "rejected": [1, 30]}},
               "flood_clear_s": 60},
    # fault_after_s: a write failing (or waiting) this long raises the `storage` fault; max_backlog:
    # telemetry and bookkeeping kept meanwhile; retain_days: events older than this are forgotten once
    # settled (0: never).
    "store": {"batch_max": 1000, "fault_after_s": 5, "max_backlog": 20000, "retain_days": 90,
              "retention_check_s": 3600},
    # test_s: a device's periodic `test` is due this often (0: not watched), test_grace_s later it is
    # missed (the `test-missed` fault); test_s_by_class: another period for a supervision class.
    "supervision": {"mains_s": 20, "battery_s": 90000, "check_s": 1.0, "low_battery_pct": 20,
                    "test_s": 86400, "test_grace_s": 3600, "test_s_by_class": {}},
    "verify": {"window_s": 120, "offline_window_s": 600},
    "location": {"gps_max_age_s": 60, "gps_max_acc_m": 50},
    # max_age_s: EN 54-21's 100 s, then `failed` (device and operator told); sending goes on, every
    # late_backoff_max_s at most, until accepted, closed by an operator, or horizon_s after receipt.
    "delivery": {"max_age_s": 100, "backoff_initial_s": 0.5, "backoff_max_s": 15, "jitter": 0.25, "workers": 1,
                 "horizon_s": 86400, "late_backoff_max_s": 60},
    "metrics": {"host": "127.0.0.1", "port": 0},
    "health_s": 10,
    # contacts told of each alarm (bridge/workers/callouts.py): type `smpp` (options: host, port,
    # system_id, password, source); ack_s: how long a contact has to answer before the next is told.
    "notify": {"type": None, "ack_s": 120, "options": {}},
    # firmware updates (docs/ota.md): release_key, the release.pub bundles are checked with; dir, where
    # uploaded bundles are kept (default: `bundles` beside the database); chunk, bytes a device gets
    # per request; confirm_s, how long a new version has to prove itself before the device rolls
    # back; stall_s, an offer or confirmation with no news this long is sent again.
    "ota": {"release_key": None, "dir": None, "chunk": 1024, "confirm_s": 300, "stall_s": 30, "tick_s": 1.0},
    "sinks": [],
    "accepted_from": None,
    "sink_types": {},
}


class ConfigError(ValueError):
    pass


def _merge(base: dict, over: dict, where: str = "") -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if k not in base:
            raise ConfigError(f"unknown config key {where}{k!r}")
        if isinstance(base[k], dict) and base[k] and not isinstance(v, dict):
            raise ConfigError(f"config key {where}{k} must be a mapping")
        if isinstance(base[k], dict) and base[k]:
            out[k] = _merge(base[k], v, f"{where}{k}.")
        else:
            out[k] = v
    return out


def env_overrides(environ) -> dict:
    over: dict = {}
    for name, raw in environ.items():
        if not name.startswith("BAOCHAY_") or name in ("BAOCHAY_CONFIG",):
            continue
        path = name[len("BAOCHAY_"):].lower().split("__")
        if path[0] not in DEFAULTS:
            continue
        value = yaml.safe_load(raw) if raw != "" else ""
        d = over
        for p in path[:-1]:
            d = d.setdefault(p, {})
        d[path[-1]] = value
    return over


def load(path: str | Path | None, environ=None) -> dict:
    raw: dict = {}
    if path:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as e:
            raise ConfigError(f"cannot read config {path}: {e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config {path} is not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config {path}: top level must be a mapping")
    cfg = _merge(DEFAULTS, raw)
    cfg = _merge(cfg, env_overrides(os.environ if environ is None else environ))
    return check(cfg, Path(path).parent if path else Path.cwd())


def check(cfg: dict, base_dir: Path) -> dict:
    # the DB path is relative to the config file, so a config works from any working directory
    dbp = Path(str(cfg["db"]))
    cfg["db"] = str(dbp if dbp.is_absolute() else (base_dir / dbp))
    m = cfg["mqtt"]
    if not m["client_id"]:
        m["client_id"] = f"baochay-bridge-{cfg['bridge_id']}"
    for k in ("port", "keepalive", "session_expiry_s"):
        if not isinstance(m[k], int):
            raise ConfigError(f"mqtt.{k} must be an integer")
    o = cfg["ota"]
    for k in ("release_key", "dir"):  # relative to the config file, as the database is
        if o[k]:
            op = Path(str(o[k]))
            o[k] = str(op if op.is_absolute() else base_dir / op)
    for k in ("chunk", "confirm_s", "stall_s"):
        if not isinstance(o[k], int) or isinstance(o[k], bool) or o[k] <= 0:
            raise ConfigError(f"ota.{k} must be a positive integer")
    if not 64 <= o["chunk"] <= 4096:
        raise ConfigError("ota.chunk must be 64 to 4096 bytes (a device's MQTT buffer takes 8192)")
    names = []
    for i, s in enumerate(cfg["sinks"] or []):
        if not isinstance(s, dict) or "name" not in s or "type" not in s:
            raise ConfigError(f"sinks[{i}] needs a name and a type")
        if s["name"] in names:
            raise ConfigError(f"sinks: duplicate name {s['name']!r}")
        w = s.get("workers", 1)
        if not isinstance(w, int) or isinstance(w, bool) or not 1 <= w <= 64:
            raise ConfigError(f"sinks[{i}].workers must be an integer from 1 to 64")
        names.append(s["name"])
    if cfg["accepted_from"] is None and names:
        cfg["accepted_from"] = names[0]
    if cfg["accepted_from"] is not None and cfg["accepted_from"] not in names:
        raise ConfigError(f"accepted_from {cfg['accepted_from']!r} is not one of the sinks ({', '.join(names)})")
    w = cfg["delivery"]["workers"]
    if not isinstance(w, int) or isinstance(w, bool) or not 1 <= w <= 64:
        raise ConfigError("delivery.workers must be an integer from 1 to 64")
    d = cfg["delivery"]
    for k in ("max_age_s", "backoff_initial_s", "backoff_max_s", "horizon_s", "late_backoff_max_s"):
        if not isinstance(d[k], (int, float)) or isinstance(d[k], bool) or d[k] <= 0:
            raise ConfigError(f"delivery.{k} must be a positive number of seconds")
    if d["horizon_s"] < d["max_age_s"]:
        raise ConfigError(f"delivery.horizon_s ({d['horizon_s']}) must be at least delivery.max_age_s "
                          f"({d['max_age_s']}): the bridge keeps trying after the failure, not less")
    rates = cfg["limits"]["rates"]
    for cls in ("mains", "battery"):
        kinds = rates.get(cls) if isinstance(rates, dict) else None
        if not isinstance(kinds, dict):
            raise ConfigError(f"limits.rates.{cls} must map telemetry, status and rejected to [per_s, burst]")
        for kind in ("telemetry", "status", "rejected"):
            v = kinds.get(kind)
            if not (isinstance(v, (list, tuple)) and len(v) == 2
                    and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in v)):
                raise ConfigError(f"limits.rates.{cls}.{kind} must be [per second, burst], both positive")
    n = cfg["notify"]
    if n["type"] is not None:
        from .notify import NOTIFIER_TYPES
        if n["type"] not in NOTIFIER_TYPES:
            raise ConfigError(f"notify.type {n['type']!r} is not one of: {', '.join(sorted(NOTIFIER_TYPES))}")
        if not isinstance(n["options"], dict):
            raise ConfigError("notify.options must be a mapping")
    if not isinstance(n["ack_s"], (int, float)) or isinstance(n["ack_s"], bool) or n["ack_s"] <= 0:
        raise ConfigError("notify.ack_s must be a positive number of seconds")
    st = cfg["store"]
    for k in ("batch_max", "fault_after_s", "max_backlog", "retention_check_s"):
        if not isinstance(st[k], (int, float)) or isinstance(st[k], bool) or st[k] <= 0:
            raise ConfigError(f"store.{k} must be a positive number")
    if not isinstance(st["retain_days"], (int, float)) or isinstance(st["retain_days"], bool) \
            or st["retain_days"] < 0:
        raise ConfigError("store.retain_days must be a number of days, 0 to keep everything")
    sup = cfg["supervision"]
    for k, v in sup.items():
        if k.startswith("test_"):
            continue
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
            raise ConfigError(f"supervision.{k} must be a positive number")
    for k in ("test_s", "test_grace_s"):
        if not isinstance(sup[k], (int, float)) or isinstance(sup[k], bool) or sup[k] < 0:
            raise ConfigError(f"supervision.{k} must be a number of seconds, 0 or more (test_s 0: not watched)")
    by_class = sup["test_s_by_class"]
    if not isinstance(by_class, dict):
        raise ConfigError("supervision.test_s_by_class must map a supervision class (mains, battery) to seconds")
    for cls, v in by_class.items():
        if cls not in ("mains", "battery"):
            raise ConfigError(f"supervision.test_s_by_class: {cls!r} is not a supervision class (mains, battery)")
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"supervision.test_s_by_class.{cls} must be a number of seconds, 0 or more")
    if not isinstance(cfg["sink_types"], dict):
        raise ConfigError("sink_types must map a type name to 'module:Class'")
    return cfg


def db_path_from(path: str | Path | None, db: str | None) -> str:
    """For CLI commands that only need the database: --db wins, else the config's."""
    if db:
        return db
    return load(path)["db"]

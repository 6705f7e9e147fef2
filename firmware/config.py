# Device configuration: load /device.json and /board.json and validate them.
# A broken or missing config raises ConfigError with a message naming the key; the app then shows a
# fault on the indicator and the console instead of crash-looping.
import json

from compat import const
from sign import parse_key

DEFAULTS = {
    "telemetry_s": 15,  # also the supervision heartbeat: the bridge marks a mains device offline after 20 s
    "cancel_window_s": 30,
    "hold_cancel_ms": 3000,
    "debounce_ms": 20,
    "outbox_max": 64,
    "test_rig": False,
    "ntp": None,
    "gps_max_age_s": 30,
    "gps_max_acc_m": 50,
    # the broker out of reach this long: restart the network interface (and again every period),
    # then reboot the device (its events wait in flash); 0 turns either off. ESPHome reboots at 15 min.
    "net_restart_s": 120,
    "net_reboot_s": 900,
    # Unix seconds the clock is raised to at start-up when it reads earlier (when `new-device` made
    # the record): TLS refuses certificates "not yet valid" on a clock that counts from 2000
    "clock_floor": 0,
    # a `test` event (cause periodic) this often, for the receiving end's supervision; 0 turns it off
    "test_s": 86400,
    # a panel input's state counts once it has held this long (EN 54-21 routing equipment)
    "panel_confirm_ms": 1000,
}
_PANEL_CONFIRM_MAX_MS = const(60000)  # longer would hold a fire alarm back from 114 for over a minute
MQTT_DEFAULTS = {"port": 1883, "tls": False, "keepalive": 30, "user": None, "password": None,
                 "ca": None, "server_hostname": None, "tls_insecure": False}


class ConfigError(Exception):
    pass


def _need(d, key, kind, where):
    if key not in d:
        raise ConfigError("%s: missing '%s'" % (where, key))
    v = d[key]
    if kind is float:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    elif kind is int:
        ok = isinstance(v, int) and not isinstance(v, bool)
    else:
        ok = isinstance(v, kind)
    if not ok:
        raise ConfigError("%s: '%s' must be %s" % (where, key, kind.__name__))
    return v


def _valid_id(s):
    if not (3 <= len(s) <= 32):
        return False
    for c in s:
        if not ("a" <= c <= "z" or "0" <= c <= "9" or c == "-"):
            return False
    return True


def validate(raw):
    """dict from device.json -> a complete config dict (defaults filled in); ConfigError otherwise."""
    if not isinstance(raw, dict):
        raise ConfigError("device config: not a JSON object")
    cfg = dict(DEFAULTS)
    cfg.update(raw)
    dev = _need(cfg, "dev", str, "device config")
    if not _valid_id(dev):
        raise ConfigError("device config: 'dev' must be 3-32 of a-z 0-9 -")
    try:
        cfg["key_bytes"] = parse_key(cfg.get("key"))
    except ValueError as e:
        raise ConfigError("device config: 'key': %s" % e)
    _need(cfg, "board", str, "device config")
    mq = dict(MQTT_DEFAULTS)
    mq.update(_need(cfg, "mqtt", dict, "device config"))
    _need(mq, "host", str, "mqtt")
    port = _need(mq, "port", int, "mqtt")
    if not 0 < port < 65536:
        raise ConfigError("mqtt: 'port' out of range")
    if mq["user"] is None:
        mq["user"] = dev
    _check_tls(mq)
    cfg["mqtt"] = mq
    loc = _need(cfg, "loc", dict, "device config")
    lat = _need(loc, "lat", float, "loc")
    lon = _need(loc, "lon", float, "loc")
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ConfigError("loc: lat/lon out of range")
    loc.setdefault("acc", 15)
    for key in ("telemetry_s", "cancel_window_s", "hold_cancel_ms", "debounce_ms", "outbox_max",
                "net_restart_s", "net_reboot_s", "clock_floor", "test_s", "panel_confirm_ms"):
        if _need(cfg, key, int, "device config") < 0:
            raise ConfigError("device config: '%s' must not be negative" % key)
    if cfg["outbox_max"] < 4:
        raise ConfigError("device config: 'outbox_max' must be at least 4")
    # shorter would restart a link still joining, or reboot a device before it could connect at all
    for key, least in (("net_restart_s", 10), ("net_reboot_s", 30)):
        if 0 < cfg[key] < least:
            raise ConfigError("device config: '%s' must be 0 (off) or at least %d" % (key, least))
    if cfg["panel_confirm_ms"] > _PANEL_CONFIRM_MAX_MS:
        raise ConfigError("device config: 'panel_confirm_ms' must be at most %d" % _PANEL_CONFIRM_MAX_MS)
    zones = cfg.get("panel_zones")
    if zones is not None:
        if not isinstance(zones, dict):
            raise ConfigError("device config: 'panel_zones' must be an object of input name -> zone text")
        for k in zones:
            if not isinstance(zones[k], str) or not 0 < len(zones[k]) <= 100:
                raise ConfigError("device config: 'panel_zones.%s' must be a text of 1..100 characters" % k)
    cfg.setdefault("site", {})
    cfg.setdefault("wifi", None)
    return cfg


def _check_tls(mq):
    """The TLS keys of the mqtt section. TLS that checks nothing must be asked for by name."""
    tls = _need(mq, "tls", bool, "mqtt")
    insecure = _need(mq, "tls_insecure", bool, "mqtt")
    for key in ("ca", "server_hostname"):
        v = mq[key]
        if v is not None and (not isinstance(v, str) or not v):
            raise ConfigError("mqtt: '%s' must be a non-empty string" % key)
    if not tls:
        if mq["ca"] is not None or insecure:
            raise ConfigError("mqtt: 'ca' and 'tls_insecure' need 'tls': true")
        return
    if mq["ca"] is not None and insecure:
        raise ConfigError("mqtt: give either 'ca' or 'tls_insecure', not both")
    # TLS with neither is not a config fault (the device still alarms locally): the MQTT client refuses
    # to connect and says so on the console.


def der_of(data):
    """A CA certificate file's bytes (DER, or PEM: the first certificate) -> DER bytes; ValueError if neither."""
    data = bytes(data)
    if data[:10] == b"-----BEGIN":
        from binascii import a2b_base64

        lines = data.replace(b"\r", b"").split(b"\n")
        body = []
        for ln in lines[1:]:
            if ln.startswith(b"-----END"):
                break
            body.append(ln.strip())
        data = a2b_base64(b"".join(body))
    if len(data) < 4 or data[0] != 0x30:  # an X.509 certificate is one DER SEQUENCE
        raise ValueError("not a DER or PEM certificate")
    return data


def _load_ca(mq, cfg_dir):
    """Read the CA file named by mqtt.ca (relative to device.json's directory) into mqtt.ca_der."""
    mq["ca_der"] = None
    name = mq.get("ca")
    if not mq.get("tls") or not name:
        return
    path = name if name.startswith("/") else cfg_dir + "/" + name
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        raise ConfigError("mqtt: CA certificate %s: not found" % path)
    try:
        mq["ca_der"] = der_of(raw)
    except ValueError as e:
        raise ConfigError("mqtt: CA certificate %s: %s" % (path, e))


def _read_json(path, what):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError:
        raise ConfigError("%s %s: not found" % (what, path))
    except ValueError as e:
        raise ConfigError("%s %s: not valid JSON (%s)" % (what, path, e))


def load(path):
    cfg = validate(_read_json(path, "device config"))
    _load_ca(cfg["mqtt"], path.rsplit("/", 1)[0] if "/" in path else ".")
    return cfg


def load_board(path):
    """/board.json (derived from boards.yaml by provisioning): pins and fitted sensors."""
    b = _read_json(path, "board config")
    if not isinstance(b, dict) or not isinstance(b.get("name"), str):
        raise ConfigError("board config %s: missing 'name'" % path)
    b.setdefault("pins", {})
    b.setdefault("sensors", [])
    return b

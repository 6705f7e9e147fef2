"""Device records: the firmware config (device.json, holding the key) stored under a devices directory.

Each device has its own directory (mode 0700) with device.json (mode 0600): the exact /device.json the
image carries (keys as firmware/config.py reads them). Installer-side facts that the firmware does not
need (SIA DC-09 account) go to record.json beside it. Keys are never printed or logged.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import ssl
import stat
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from firmware.protocol_host import ID_MAX, ID_MIN, RESERVED_IDS, valid_id

from .boards import BOARDS_YAML, get_board
from .errors import ProvisionError

DEFAULT_DEVICES_DIR = Path("var") / "devices"
CSV_COLUMNS = ("id", "board", "building", "address", "floor", "room", "lat", "lon", "acc", "contact_phone",
               "province")
CSV_OPTIONAL = ("dc09_account",)
HEX_RE = re.compile(r"^[0-9A-Fa-f]{3,16}$")


class DeviceError(ProvisionError):
    pass


@dataclass
class Network:
    """What every device of one installation shares: broker and Wi-Fi."""

    broker_host: str
    broker_port: int = 8883
    tls: bool = True
    keepalive: int = 30
    wifi_ssid: str | None = None
    wifi_password: str | None = None
    telemetry_s: int = 60
    cancel_window_s: int = 30
    test_s: int = 86400  # the periodic `test` event, on every device; 0: off
    panel_confirm_ms: int = 1000  # how long a panel input's state must hold (boards with a panel)
    test_rig: bool = False
    ca_cert: bytes | None = None  # DER: the CA that signed the broker's certificate (read_ca_cert)


@dataclass
class Site:
    building: str
    address: str
    floor: str = ""
    room: str = ""
    lat: float = 0.0
    lon: float = 0.0
    acc: int = 15
    contact_phone: str = ""
    province: str = ""
    dc09: dict[str, str] = field(default_factory=dict)


def check_id(dev_id: str) -> str:
    if dev_id in RESERVED_IDS:
        raise DeviceError(f"device id {dev_id!r} is reserved (the bridges' and the observer's broker accounts "
                          f"and topics: {', '.join(RESERVED_IDS)}); choose another")
    if not valid_id(dev_id):
        raise DeviceError(f"device id {dev_id!r}: must be {ID_MIN}-{ID_MAX} characters of a-z, 0-9 and '-'")
    return dev_id


def check_location(lat: float, lon: float, acc: int) -> None:
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise DeviceError(f"location {lat},{lon}: latitude must be within ±90 and longitude within ±180")
    if acc < 0:
        raise DeviceError("location accuracy must not be negative")


PANEL_CONFIRM_MAX_MS = 60000  # as firmware/config.py: longer holds a fire alarm back over a minute


def check_timing(net: Network) -> None:
    """The periodic test and the panel's confirmation time, in the ranges the firmware takes."""
    if net.test_s < 0:
        raise DeviceError(f"--test-s {net.test_s}: must be 0 (no periodic test) or a number of seconds")
    if not 0 <= net.panel_confirm_ms <= PANEL_CONFIRM_MAX_MS:
        raise DeviceError(f"--panel-confirm-ms {net.panel_confirm_ms}: must be 0..{PANEL_CONFIRM_MAX_MS}")


def device_config(dev_id: str, board: str, site: Site, net: Network) -> dict[str, Any]:
    """A fresh /device.json: new 32-byte key and new broker password."""
    wifi = {"ssid": net.wifi_ssid, "password": net.wifi_password or ""} if net.wifi_ssid else None
    return {
        "dev": dev_id,
        "key": secrets.token_bytes(32).hex(),
        "board": board,
        "mqtt": {
            "host": net.broker_host,
            "port": net.broker_port,
            "user": dev_id,
            "password": secrets.token_urlsafe(24),
            "tls": net.tls,
            "keepalive": net.keepalive,
        },
        "wifi": wifi,
        "loc": {"lat": round(site.lat, 6), "lon": round(site.lon, 6), "acc": site.acc},
        "site": {
            "building": site.building,
            "address": site.address,
            "floor": site.floor,
            "room": site.room,
            "contact_phone": site.contact_phone,
            "province": site.province,
        },
        "telemetry_s": net.telemetry_s,
        "cancel_window_s": net.cancel_window_s,
        "test_s": net.test_s,
        "test_rig": net.test_rig,
    }


CA_FILE = "ca.der"  # beside device.json, in the record and on the device's flash


def read_ca_cert(path: Path) -> bytes:
    """One CA certificate from a PEM or DER file, as DER (what the firmware loads); DeviceError otherwise."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise DeviceError(f"CA certificate {path}: cannot read ({e.strerror})") from None
    if raw.lstrip().startswith(b"-----BEGIN"):
        text = raw.decode("ascii", "replace")
        certs = re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", text, re.S)
        if len(certs) != 1:
            raise DeviceError(f"CA certificate {path}: holds {len(certs)} certificates; give exactly one, the CA "
                              f"that signed the broker's certificate")
        try:
            der = ssl.PEM_cert_to_DER_cert(certs[0])
        except ValueError as e:
            raise DeviceError(f"CA certificate {path}: {e}") from None
    else:
        der = raw
    try:
        ssl.create_default_context(cadata=der)
    except (ssl.SSLError, ValueError):
        raise DeviceError(f"CA certificate {path}: not a PEM or DER X.509 certificate") from None
    return der


def device_dir(devices_dir: Path, dev_id: str) -> Path:
    return Path(devices_dir) / check_id(dev_id)


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Write JSON readable by the owner only, created with that mode (never briefly world-readable)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def create_device(devices_dir: Path, dev_id: str, board: str, site: Site, net: Network,
                  boards_yaml: Path = BOARDS_YAML) -> Path:
    """Create var/devices/<id>/device.json; refuses an id that already exists."""
    check_id(dev_id)
    panel = get_board(board, boards_yaml).panel
    check_location(site.lat, site.lon, site.acc)
    check_timing(net)
    if site.dc09.get("account") and not HEX_RE.match(site.dc09["account"]):
        raise DeviceError(f"device '{dev_id}': DC-09 account must be 3-16 hex digits")
    if net.ca_cert is not None and not net.tls:
        raise DeviceError("a CA certificate is only used with TLS; drop --no-tls or the CA certificate")
    d = device_dir(devices_dir, dev_id)
    if (d / "device.json").exists():
        raise DeviceError(f"device '{dev_id}' already exists in {d}; choose another id")
    Path(devices_dir).mkdir(parents=True, exist_ok=True)
    d.mkdir(mode=0o700, exist_ok=True)
    os.chmod(d, 0o700)
    cfg = device_config(dev_id, board, site, net)
    if panel:
        cfg["panel_confirm_ms"] = net.panel_confirm_ms
    # the device's clock never reads earlier than this (firmware/config.py): TLS needs a date, and
    # a record's builds stay byte for byte the same
    cfg["clock_floor"] = int(time.time())
    if net.ca_cert is not None:
        cfg["mqtt"]["ca"] = CA_FILE
        (d / CA_FILE).write_bytes(net.ca_cert)
    _write_private(d / "device.json", cfg)
    _write_private(d / "record.json", {"dc09": site.dc09})
    return d


def set_ca(devices_dir: Path, dev_id: str, der: bytes) -> None:
    """Give an existing device record this CA certificate (a new CA, or one added after new-device)."""
    cfg = load_device(devices_dir, dev_id)
    if not cfg.get("mqtt", {}).get("tls"):
        raise DeviceError(f"device '{dev_id}' connects without TLS; a CA certificate would not be used")
    d = device_dir(devices_dir, dev_id)
    (d / CA_FILE).write_bytes(der)
    cfg["mqtt"]["ca"] = CA_FILE
    cfg["mqtt"].pop("tls_insecure", None)
    _write_private(d / "device.json", cfg)


def load_ca(devices_dir: Path, dev_id: str, cfg: dict[str, Any]) -> bytes | None:
    """The CA certificate the record's device.json names (mqtt.ca), or None when it names none."""
    name = (cfg.get("mqtt") or {}).get("ca")
    if not name:
        return None
    path = device_dir(devices_dir, dev_id) / name
    try:
        return path.read_bytes()
    except OSError:
        raise DeviceError(f"{path}: missing; device.json names it as the CA certificate "
                          f"(give it again with: build --device {dev_id} --ca-cert FILE)") from None


def check_private(path: Path) -> None:
    """Refuse a secret file that group or others can access: the key would not be secret any more."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        raise DeviceError(f"{path}: not found") from None
    if mode & 0o077:
        raise DeviceError(
            f"{path}: permissions {mode:04o} let other users read the device key; "
            f"refusing to use it. Fix with: chmod 600 {path}  (and treat the key as leaked if others "
            f"could log in here)"
        )


def load_device(devices_dir: Path, dev_id: str) -> dict[str, Any]:
    path = device_dir(devices_dir, dev_id) / "device.json"
    if not path.exists():
        raise DeviceError(f"device '{dev_id}' not found in {devices_dir} (create it with: new-device --id {dev_id})")
    check_private(path)
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise DeviceError(f"{path}: not valid JSON ({e})") from None


def load_record(devices_dir: Path, dev_id: str) -> dict[str, Any]:
    path = device_dir(devices_dir, dev_id) / "record.json"
    if not path.exists():
        return {"dc09": {}}
    return json.loads(path.read_text())


def list_devices(devices_dir: Path) -> list[str]:
    d = Path(devices_dir)
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if (p / "device.json").exists())


@dataclass
class CsvResult:
    created: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # "line N: message"
    warnings: list[str] = field(default_factory=list)  # "line N: message": created, but worth a look


def current_address(text: str, province: str = "") -> tuple[str, list[str]]:
    """The address in the 2025 units (street, ward or commune, province; bridge/address.py), and what
    was changed or could not be recognised, for the installer to read."""
    from bridge.address import normalize

    addr, warnings = normalize(text, province)
    return addr.text, warnings


def _row_site(row: dict[str, str]) -> Site:
    def num(key: str, kind):
        v = (row.get(key) or "").strip()
        if not v:
            raise DeviceError(f"'{key}' is empty")
        try:
            return kind(v)
        except ValueError:
            raise DeviceError(f"'{key}' is not a number: {v!r}") from None

    for key in ("building", "address"):
        if not (row.get(key) or "").strip():
            raise DeviceError(f"'{key}' is empty")
    acc = num("acc", float)
    return Site(
        building=row["building"].strip(),
        address=row["address"].strip(),
        floor=(row.get("floor") or "").strip(),
        room=(row.get("room") or "").strip(),
        lat=num("lat", float),
        lon=num("lon", float),
        acc=int(round(acc)),
        contact_phone=(row.get("contact_phone") or "").strip(),
        province=(row.get("province") or "").strip(),
        dc09={"account": row["dc09_account"].strip()} if (row.get("dc09_account") or "").strip() else {},
    )


def create_from_csv(csv_path: Path, devices_dir: Path, net: Network,
                    boards_yaml: Path = BOARDS_YAML) -> CsvResult:
    """One device per row; a bad row is reported by its line number and the others still go through."""
    from bridge.csvtext import CsvTextError, dict_reader

    result = CsvResult()
    try:
        reader = dict_reader(csv_path)
    except CsvTextError as e:
        raise DeviceError(str(e)) from None
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise DeviceError(
            f"{csv_path}: line 1: missing column(s) {', '.join(missing)}; "
            f"the header must be: {','.join(CSV_COLUMNS)}"
        )
    reader.fieldnames = header
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        try:
            if None in row or any(v is None for v in row.values()):
                raise DeviceError(f"expected {len(header)} columns")
            dev_id = (row.get("id") or "").strip()
            check_id(dev_id)
            if dev_id in seen:
                raise DeviceError(f"duplicate device id '{dev_id}' (first on line {seen[dev_id]})")
            site = _row_site(row)
            address, said = current_address(site.address, site.province)
            site = replace(site, address=address)
            create_device(devices_dir, dev_id, (row.get("board") or "").strip(), site, net, boards_yaml)
            result.warnings.extend(f"line {line}: {w}" for w in said)
            seen[dev_id] = line
            result.created.append(dev_id)
        except ProvisionError as e:
            result.errors.append(f"line {line}: {e}")
    return result

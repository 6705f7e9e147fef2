"""The device registry: who may send, with which key, and where each device is installed.

Keys live in the bridge database only; nothing here prints or logs them (`Device.__repr__` hides it).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from firmware import protocol_host

from . import db
from .csvtext import CsvTextError, dict_reader

KEY_RE = re.compile(r"^[0-9a-fA-F]{64}$")
TEXT_FIELDS = ("board", "building", "address", "floor", "room", "contact_phone", "province",
               "dc09_account", "dc09_receiver", "dc09_line")
FLOAT_FIELDS = ("lat", "lon", "acc")
FIELDS = ("id", "key") + TEXT_FIELDS + FLOAT_FIELDS + ("supervision",)  # what an installer gives
# What the registry derives from the address (bridge/address.py): the 2025 ward and the official codes.
DERIVED_FIELDS = ("ward", "ward_code", "province_code")
STORED_FIELDS = FIELDS + DERIVED_FIELDS
CLASSES = ("mains", "battery")


class RegistryError(ValueError):
    pass


@dataclass(frozen=True)
class Device:
    id: str
    key: bytes = field(repr=False)
    board: str = ""
    building: str = ""
    address: str = ""
    floor: str = ""
    room: str = ""
    lat: float | None = None
    lon: float | None = None
    acc: float | None = None
    contact_phone: str = ""
    province: str = ""
    supervision: str = "mains"
    dc09_account: str = ""
    dc09_receiver: str = ""
    dc09_line: str = ""
    ward: str = ""
    ward_code: str = ""
    province_code: str = ""

    def public(self) -> dict:
        """Every field except the key."""
        return {k: getattr(self, k) for k in STORED_FIELDS if k != "key"}


def normalise(record: dict, warnings: list[str] | None = None) -> dict:
    """A registry record (strings from CSV or typed values) -> clean column values; RegistryError.
    The address is normalized to the 2025 units (bridge/address.py); what that says goes to `warnings`."""
    out: dict = {}
    dev_id = str(record.get("id") or "").strip()
    if dev_id in protocol_host.RESERVED_IDS:
        raise RegistryError(f"id {dev_id!r} is reserved for a service account ({', '.join(protocol_host.RESERVED_IDS)})")
    if not protocol_host.valid_id(dev_id):
        raise RegistryError(f"id {dev_id!r} must be 3-32 of a-z, 0-9, '-'")
    out["id"] = dev_id
    key = str(record.get("key") or "").strip()
    if not KEY_RE.match(key):
        raise RegistryError("key must be 64 hex digits")
    out["key"] = key.lower()
    for k in TEXT_FIELDS:
        v = record.get(k)
        out[k] = "" if v is None else str(v).strip()
    for k in FLOAT_FIELDS:
        v = record.get(k)
        if v is None or (isinstance(v, str) and not v.strip()):
            out[k] = None
            continue
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            raise RegistryError(f"{k} must be a number, not {v!r}") from None
    if out["lat"] is not None and not -90 <= out["lat"] <= 90:
        raise RegistryError("lat must be within -90..90")
    if out["lon"] is not None and not -180 <= out["lon"] <= 180:
        raise RegistryError("lon must be within -180..180")
    sup = str(record.get("supervision") or "mains").strip().lower()
    if sup not in CLASSES:
        raise RegistryError(f"supervision must be mains or battery, not {sup!r}")
    out["supervision"] = sup
    for k in DERIVED_FIELDS:
        out[k] = ""
    if out["address"]:
        from .address import normalize  # its tables take a quarter of a second to load: only when needed

        addr, said = normalize(out["address"], out["province"])
        out["address"] = addr.text
        if addr.ward_code:
            out.update(ward=addr.ward, ward_code=addr.ward_code, province_code=addr.province_code,
                       province=addr.province)
        if warnings is not None:
            warnings.extend(f"{dev_id}: {w}" for w in said)
    return out


def _row_to_device(row) -> Device:
    d = {k: row[k] for k in STORED_FIELDS}
    d["key"] = bytes.fromhex(d["key"])
    return Device(**d)


@dataclass
class ImportResult:
    added: list[str] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, message)
    warnings: list[tuple[int, str]] = field(default_factory=list)  # stored, but worth a look


class Registry:
    """Devices in the bridge database. Thread-safe; `get` is served from a cache refreshed on change."""

    def __init__(self, db_path: str | Path):
        self.db_path = Path(db_path)
        self._conn = db.connect(self.db_path)
        self._lock = threading.Lock()
        self._cache: dict[str, Device] = {}
        self._cache_at = 0.0
        self.reload()

    def reload(self) -> None:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM devices").fetchall()
            self._cache = {r["id"]: _row_to_device(r) for r in rows}
            self._cache_at = time.monotonic()

    def upsert(self, record: dict, warnings: list[str] | None = None) -> Device:
        """Add or replace one device (keys as in FIELDS; optional ones default to ''/None)."""
        rec = normalise(record, warnings)
        cols = ", ".join(rec)
        marks = ", ".join("?" for _ in rec)
        updates = ", ".join(f"{k}=excluded.{k}" for k in rec if k != "id")
        with self._lock:
            self._conn.execute(
                f"INSERT INTO devices ({cols}, added_at) VALUES ({marks}, ?) "
                f"ON CONFLICT(id) DO UPDATE SET {updates}",
                (*rec.values(), time.time()),
            )
            row = self._conn.execute("SELECT * FROM devices WHERE id=?", (rec["id"],)).fetchone()
            dev = _row_to_device(row)
            self._cache[dev.id] = dev
        return dev

    add = upsert

    def upsert_many(self, records) -> int:
        """Many devices in one transaction (one fsync), e.g. a whole building or a test fleet."""
        n = 0
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for record in records:
                    rec = normalise(record)
                    cols = ", ".join(rec)
                    updates = ", ".join(f"{k}=excluded.{k}" for k in rec if k != "id")
                    self._conn.execute(
                        f"INSERT INTO devices ({cols}, added_at) VALUES ({', '.join('?' for _ in rec)}, ?) "
                        f"ON CONFLICT(id) DO UPDATE SET {updates}", (*rec.values(), time.time()))
                    n += 1
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        self.reload()
        return n

    def get(self, dev_id: str) -> Device | None:
        dev = self._cache.get(dev_id)
        if dev is None and time.monotonic() - self._cache_at > 1.0:
            # a device registered by another process (the provisioning tool) since we last looked
            self.reload()
            dev = self._cache.get(dev_id)
        return dev

    def cached(self) -> list[Device]:
        """The devices as last loaded, without touching the database (for hot paths)."""
        return list(self._cache.values())

    def list(self) -> list[Device]:
        self.reload()
        return sorted(self._cache.values(), key=lambda d: d.id)

    def remove(self, dev_id: str) -> bool:
        with self._lock:
            n = self._conn.execute("DELETE FROM devices WHERE id=?", (dev_id,)).rowcount
            self._cache.pop(dev_id, None)
        return n > 0

    def import_csv(self, path: str | Path) -> ImportResult:
        """Import a building's devices. Bad rows are reported by line number; good rows still go in."""
        result = ImportResult()
        seen: dict[str, int] = {}
        try:
            reader = dict_reader(path)
        except CsvTextError as e:
            result.errors.append((1, str(e)))
            return result
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [k for k in ("id", "key") if k not in header]
        if missing:
            result.errors.append((1, f"header row lacks column(s): {', '.join(missing)}"))
            return result
        unknown = [h for h in header if h not in FIELDS]
        if unknown:
            result.errors.append((1, f"unknown column(s) ignored: {', '.join(unknown)}"))
        reader.fieldnames = header
        for row in reader:
            line = reader.line_num
            if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                continue
            dev_id = (row.get("id") or "").strip()
            if dev_id in seen:
                result.errors.append((line, f"duplicate id {dev_id!r} (first on line {seen[dev_id]})"))
                continue
            said: list[str] = []
            try:
                self.upsert({k: row.get(k) for k in FIELDS}, said)
            except RegistryError as e:
                result.errors.append((line, str(e)))
                continue
            result.warnings.extend((line, w) for w in said)
            seen[dev_id] = line
            result.added.append(dev_id)
        return result

    def close(self) -> None:
        self._conn.close()

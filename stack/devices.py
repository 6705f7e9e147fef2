"""Device records for local runs and tests: a device config with a fresh key and broker password."""

from __future__ import annotations

import json
import secrets
from pathlib import Path


def device_config(dev: str, broker_port: int, *, lat: float = 21.028511, lon: float = 105.804817, acc: int = 15,
                  broker_host: str = "127.0.0.1", site: dict | None = None, **overrides) -> dict:
    """A complete firmware config (firmware/config.py) with a new 32-byte key and MQTT password."""
    cfg = {
        "dev": dev,
        "key": secrets.token_hex(32),
        "board": "virtual",
        "mqtt": {"host": broker_host, "port": broker_port, "user": dev, "password": secrets.token_urlsafe(18),
                 "tls": False, "keepalive": 10},
        "loc": {"lat": lat, "lon": lon, "acc": acc},
        "site": site or {},
        "telemetry_s": 5,
        "cancel_window_s": 30,
        "hold_cancel_ms": 3000,
        "test_rig": True,
    }
    cfg.update(overrides)
    return cfg


def write_device(cfg: dict, directory: Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    path = directory / "device.json"
    path.write_text(json.dumps(cfg, indent=1, ensure_ascii=False))
    path.chmod(0o600)
    return path

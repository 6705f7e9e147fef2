"""Register a provisioned device: the bridge registry (its key and site) and the broker (password, ACL)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from provisioning.acl import DEVICE_ACL
from stack.passwd import hash_password, read_users, write_users

from .boards import Board
from .errors import ProvisionError

DEFAULT_DB = Path("var") / "bridge.db"  # the bridge's own default (bridge/config.py)


class RegisterError(ProvisionError):
    pass


def registry_record(device: dict[str, Any], board: Board, record: dict[str, Any]) -> dict[str, Any]:
    """The bridge registry's view of a device (bridge.registry FIELDS)."""
    site = device.get("site") or {}
    loc = device.get("loc") or {}
    dc09 = record.get("dc09") or {}
    return {
        "id": device["dev"],
        "key": device["key"],
        "board": device["board"],
        "building": site.get("building", ""),
        "address": site.get("address", ""),
        "floor": site.get("floor", ""),
        "room": site.get("room", ""),
        "lat": loc.get("lat"),
        "lon": loc.get("lon"),
        "acc": loc.get("acc"),
        "contact_phone": site.get("contact_phone", ""),
        "province": site.get("province", ""),
        "supervision": board.supervision,
        "dc09_account": dc09.get("account", ""),
        "dc09_receiver": dc09.get("receiver", ""),
        "dc09_line": dc09.get("line", ""),
    }


def upsert_registry(db_path: Path, rec: dict[str, Any]) -> None:
    """The one call into the bridge: add or replace the device in its registry database."""
    try:
        from bridge.registry import Registry, RegistryError
    except ImportError as e:
        raise RegisterError(f"the bridge registry is not available here ({e}); install the bridge package") from None
    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    reg = Registry(db_path)
    try:
        reg.upsert(rec)
    except RegistryError as e:
        raise RegisterError(f"the bridge registry refused device '{rec.get('id')}': {e}") from None
    finally:
        close = getattr(reg, "close", None)
        if close:
            close()


DEVICES_SUFFIX = ".devices"  # beside the password file: the users this tool added there as devices


def _devices_file(passwd_file: Path) -> Path:
    return passwd_file.with_name(passwd_file.name + DEVICES_SUFFIX)


def device_users(passwd_file: Path) -> set[str]:
    try:
        return set(_devices_file(Path(passwd_file)).read_text().split())
    except FileNotFoundError:
        return set()


def set_broker_password(passwd_file: Path, user: str, password: str, service: bool = False) -> None:
    """Add or replace one user in a Mosquitto password file, hashed here (stack/passwd.py): no
    password on any command line. A device never replaces a user it was not added as (a service
    account such as the bridge's, or one added by hand): that would hand the device its rights."""
    passwd_file = Path(passwd_file)
    users = read_users(passwd_file)
    ours = device_users(passwd_file)
    if not service and user in users and user not in ours:
        raise RegisterError(
            f"{passwd_file}: user '{user}' is already there and was not added as a device by this tool "
            f"(a service account, or added by hand); its password is left as it is. Choose another device "
            f"id, or if '{user}' is a device registered before this check, add it to {_devices_file(passwd_file)}")
    users[user] = hash_password(password)
    write_users(passwd_file, users)
    if not service and user not in ours:
        listed = _devices_file(passwd_file)
        fd = os.open(listed, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(user + "\n")


def ensure_device_acl(acl_file: Path) -> bool:
    """Make sure the ACL holds the per-device %u patterns; True when it had to add them."""
    acl_file = Path(acl_file)
    text = acl_file.read_text() if acl_file.exists() else ""
    if all(line in text.splitlines() for line in DEVICE_ACL.splitlines()):
        return False
    sep = "" if not text or text.endswith("\n") else "\n"
    with open(acl_file, "a") as f:
        f.write(sep + "\n# devices: own topics only (user name = device id)\n" + DEVICE_ACL)
    return True


def register(device: dict[str, Any], board: Board, record: dict[str, Any], db_path: Path | None,
             passwd_file: Path | None, acl_file: Path | None) -> list[str]:
    """Do every part asked for; return what was done, in words."""
    done = []
    if db_path is not None:
        upsert_registry(db_path, registry_record(device, board, record))
        done.append(f"bridge registry {db_path}: device '{device['dev']}' added or updated")
    if passwd_file is not None:
        mq = device.get("mqtt") or {}
        set_broker_password(passwd_file, mq.get("user") or device["dev"], mq["password"])
        done.append(f"broker password file {passwd_file}: user '{device['dev']}' set")
    if acl_file is not None:
        added = ensure_device_acl(acl_file)
        done.append(f"broker ACL {acl_file}: " + ("device patterns added" if added else "already has the device patterns"))
    return done

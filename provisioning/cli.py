"""baochay-provision: from boards.yaml to a flashed, registered, verified device."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import boards as boards_mod
from .devices import (
    DEFAULT_DEVICES_DIR,
    Network,
    Site,
    create_device,
    create_from_csv,
    current_address,
    load_ca,
    load_device,
    load_record,
    read_ca_cert,
    set_ca,
)
from .errors import ProvisionError

EPILOG = """\
The usual order on site, for one device:

  baochay-provision boards
  baochay-provision new-device --id hn-a-0001 --board esp32-devkitc \\
      --building "Toà A" --address "1 Tràng Tiền, Hoàn Kiếm, Hà Nội" --floor 3 --room 301 \\
      --lat 21.028511 --lon 105.804817 --acc 15 --contact-phone 0901234567 --province "Hà Nội" \\
      --broker-host mqtt.example.vn --ca-cert ca.crt --wifi-ssid SiteWiFi
      (Wi-Fi password: $BAOCHAY_WIFI_PASSWORD; ca.crt: the CA that signed the broker's certificate)
  baochay-provision register --device hn-a-0001 --broker-dir /etc/mosquitto/baochay
  baochay-provision flash --device hn-a-0001 --port /dev/ttyUSB0 --firmware ESP32_GENERIC-v1.29.0.bin
  baochay-provision verify --device hn-a-0001 --port /dev/ttyUSB0

A whole building from a spreadsheet (columns: id,board,building,address,floor,room,lat,lon,acc,
contact_phone,province):

  baochay-provision new-device --csv toa-a.csv --broker-host mqtt.example.vn --ca-cert ca.crt --wifi-ssid SiteWiFi

Factory flashing, one merged image per device written at 0x0:

  baochay-provision flash --device hn-a-0001 --firmware ESP32_GENERIC-v1.29.0.bin --merge

Signed firmware bundles for over-the-air updates (the bridge offers them to devices):

  baochay-provision release keygen --out /media/offline-usb
  baochay-provision release build --key /media/offline-usb/release.key --version 0.2.0 --security-version 2

Device keys are never printed. Each command explains itself: baochay-provision <command> --help.
See docs/installer-guide.md.
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--boards", type=Path, default=boards_mod.BOARDS_YAML, metavar="FILE",
                   help="board definitions (default: boards.yaml of this repository)")
    p.add_argument("--devices-dir", type=Path, default=DEFAULT_DEVICES_DIR, metavar="DIR",
                   help="where device records live (default: var/devices)")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="baochay-provision",
        description="Turn a bare ESP32 board into a registered, verified Báo cháy 114 device.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    raw = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("boards", help="list the supported boards and what each has fitted", formatter_class=raw,
                       epilog="Examples:\n  baochay-provision boards\n  baochay-provision boards --wiring esp32-devkitc")
    _add_common(p)
    p.add_argument("--wiring", metavar="BOARD", help="print the wiring table of one board")

    p = sub.add_parser(
        "new-device", help="create a device record (id, key, site, broker, Wi-Fi), or many from a CSV",
        formatter_class=raw, epilog=(
            "Examples:\n"
            "  baochay-provision new-device --id hn-a-0001 --board esp32-devkitc --building 'Toà A' \\\n"
            "      --address '1 Tràng Tiền' --lat 21.028511 --lon 105.804817 --broker-host mqtt.example.vn\n"
            "  baochay-provision new-device --csv toa-a.csv --broker-host mqtt.example.vn --wifi-ssid SiteWiFi\n\n"
            "The record goes to <devices-dir>/<id>/device.json (mode 0600). The Wi-Fi password is read from\n"
            "$BAOCHAY_WIFI_PASSWORD when --wifi-password is not given (keeps it out of the shell history)."))
    _add_common(p)
    p.add_argument("--csv", type=Path, metavar="FILE", help="one device per row (see the column list above)")
    p.add_argument("--id", help="device id: 3-32 of a-z 0-9 -, also its MQTT user name")
    p.add_argument("--board", help="a board name from `boards`")
    p.add_argument("--building")
    p.add_argument("--address")
    p.add_argument("--floor", default="")
    p.add_argument("--room", default="")
    p.add_argument("--lat", type=float, help="fixed latitude, WGS-84 degrees")
    p.add_argument("--lon", type=float, help="fixed longitude, WGS-84 degrees")
    p.add_argument("--acc", type=float, default=15, help="accuracy of the fixed position in metres (default 15)")
    p.add_argument("--contact-phone", default="")
    p.add_argument("--province", default="")
    p.add_argument("--broker-host", required=True, help="MQTT broker the device connects to")
    p.add_argument("--broker-port", type=int, help="default 8883 (TLS), 1883 with --no-tls")
    p.add_argument("--no-tls", action="store_true", help="plain MQTT (a local test broker only)")
    p.add_argument("--ca-cert", type=Path, metavar="FILE",
                   help="CA certificate (PEM or DER) that signed the broker's certificate; the device checks "
                        "the broker with it (needed with TLS; may also be given later to build)")
    p.add_argument("--keepalive", type=int, default=30)
    p.add_argument("--wifi-ssid")
    p.add_argument("--wifi-password")
    p.add_argument("--telemetry-s", type=int, default=60)
    p.add_argument("--cancel-window-s", type=int, default=30)
    p.add_argument("--test-s", type=int, default=86400,
                   help="a periodic test event this often, in seconds (default 86400, a day; 0: none)")
    p.add_argument("--panel-confirm-ms", type=int, default=1000,
                   help="boards with panel inputs: how long an input's state must hold before it counts "
                        "(default 1000 ms)")
    p.add_argument("--test-rig", action="store_true",
                   help="accept sensor/press injection over the console (bench and test boards only)")
    p.add_argument("--dc09-account", default="", help="SIA DC-09 account (3-16 hex digits), when used")
    p.add_argument("--dc09-receiver", default="")
    p.add_argument("--dc09-line", default="")

    p = sub.add_parser("build", help="compile the firmware and make the device's LittleFS image",
                       formatter_class=raw, epilog="Example:\n  baochay-provision build --device hn-a-0001\n"
                       "Writes build/<id>/fs.img and build/<id>/manifest.json.")
    _add_common(p)
    p.add_argument("--device", required=True, metavar="ID")
    p.add_argument("--out", type=Path, metavar="DIR", help="default: build/<id>")
    p.add_argument("--ca-cert", type=Path, metavar="FILE",
                   help="set the device's CA certificate (PEM or DER) in its record, then build with it")

    p = sub.add_parser(
        "flash", help="build, then write the firmware and the image to a board (or a virtual board)",
        formatter_class=raw, epilog=(
            "Examples:\n"
            "  baochay-provision flash --device hn-a-0001 --port /dev/ttyUSB0\n"
            "  baochay-provision flash --device hn-a-0001 --port /dev/ttyACM0 --firmware ESP32_GENERIC_C3-v1.29.0.bin\n"
            "  baochay-provision flash --device hn-a-0001 --firmware ESP32_GENERIC-v1.29.0.bin --merge\n"
            "  baochay-provision flash --device vb-0001                 (virtual board: var/vboards/<id>/fs.img)\n\n"
            "The chip and flash size are read from the board first; a mismatch with boards.yaml stops here."))
    _add_common(p)
    p.add_argument("--device", required=True, metavar="ID")
    p.add_argument("--port", help="serial port (/dev/ttyUSB0, /dev/ttyACM0, COM3); virtual board: the image path")
    p.add_argument("--firmware", type=Path, metavar="FILE.bin", help="MicroPython firmware, written first")
    p.add_argument("--merge", action="store_true", help="write one merged image (from 0x0) instead of flashing")
    p.add_argument("--out", type=Path, metavar="FILE", help="merged image path (default build/<id>/merged.bin)")
    p.add_argument("--baud", type=int, default=460800)
    p.add_argument("--connect-attempts", type=int, default=7, help="tries to reach the ROM loader (default 7)")
    p.add_argument("--stub", choices=("esptool", "legacy", "none"), default="esptool",
                   help="flasher run on the chip: esptool's (default), its legacy one (the emulated ESP32 "
                        "needs it), or none (the ROM loader alone, slow)")

    p = sub.add_parser(
        "verify", help="check a running device over its serial console; exit 0 only when every check passes",
        formatter_class=raw, epilog=(
            "Examples:\n"
            "  baochay-provision verify --device hn-a-0001 --port /dev/ttyUSB0\n"
            "  baochay-provision verify --port /dev/pts/5 --board virtual --bridge\n\n"
            "Checks: console, device id, firmware, board, sensors, no fault, network + broker, self-test,\n"
            "broker accepted (the test event was published), and with --bridge: bridge stored."))
    _add_common(p)
    p.add_argument("--port", required=True)
    p.add_argument("--device", metavar="ID", help="the device you expect (its board comes from its record)")
    p.add_argument("--board", help="the board you expect, when not giving --device")
    p.add_argument("--fw", help="the firmware version you expect")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--net-timeout", type=float, default=30.0, help="seconds to wait for the broker (default 30)")
    p.add_argument("--test-timeout", type=float, default=10.0, help="seconds to wait for the self-test event")
    p.add_argument("--reply-timeout", type=float, default=3.0, help="seconds to wait for each console reply")
    p.add_argument("--bridge", action="store_true", help="also wait until the bridge stores the self-test")
    p.add_argument("--bridge-timeout", type=float, default=15.0)

    p = sub.add_parser(
        "register", help="add the device to the bridge registry and the broker's password file and ACL",
        formatter_class=raw, epilog=(
            "Examples:\n"
            "  baochay-provision register --device hn-a-0001 --broker-dir /etc/mosquitto/baochay\n"
            "  baochay-provision register --device hn-a-0001 --db var/bridge.db --passwd-file passwd --acl-file acl"))
    _add_common(p)
    p.add_argument("--device", required=True, metavar="ID")
    p.add_argument("--db", type=Path, default=Path("var") / "bridge.db", help="bridge database (default var/bridge.db)")
    p.add_argument("--no-registry", action="store_true", help="broker entries only")
    p.add_argument("--broker-dir", type=Path, metavar="DIR", help="a directory made by broker-config (passwd, acl)")
    p.add_argument("--passwd-file", type=Path)
    p.add_argument("--acl-file", type=Path)

    p = sub.add_parser(
        "broker-config", help="write a production Mosquitto configuration (TLS 8883, passwords, ACL)",
        formatter_class=raw, epilog=(
            "Example:\n"
            "  sudo baochay-provision broker-config --out /etc/mosquitto/baochay \\\n"
            "      --cafile /etc/mosquitto/certs/ca.crt --certfile /etc/mosquitto/certs/server.crt \\\n"
            "      --keyfile /etc/mosquitto/certs/server.key\n"
            "  then in /etc/mosquitto/mosquitto.conf: include_dir /etc/mosquitto/baochay  (or run mosquitto -c)"))
    p.add_argument("--out", type=Path, default=Path("var") / "broker", metavar="DIR")
    p.add_argument("--cafile", required=True)
    p.add_argument("--certfile", required=True)
    p.add_argument("--keyfile", required=True)
    p.add_argument("--tls-port", type=int, default=8883)
    p.add_argument("--bind", default="", help="address of the TLS listener (default: every interface)")
    p.add_argument("--bridge-user", default="bridge")
    p.add_argument("--local-port", type=int, default=1883,
                   help="plain listener on 127.0.0.1 for a bridge on the same host (default 1883; 0: none)")
    p.add_argument("--persistence-location", default="/var/lib/mosquitto/")

    _add_release(sub, raw)
    return ap


RELEASE_EPILOG = """\
Examples:
  baochay-provision release keygen --out /media/offline-usb
  baochay-provision release build --key /media/offline-usb/release.key --version 0.2.0 --security-version 2
  baochay-provision release build --key release.key --version 0.2.0 --security-version 2 \\
      --boards virtual,virtual-panic,virtual-transmitter
  baochay-provision release verify build/release/baochay-0.2.0.bcb --pub release.pub

A bundle (.bcb) holds the application compiled for MicroPython (every firmware module but main.py,
boot.py and the boot selector slots.py, which stay on the device), a manifest (version, security
version, boards, the SHA-256 of each part) and the manifest's Ed25519 signature. The bridge checks it
with release.pub (config key ota.release_key) before offering it to devices. Keep release.key offline.
"""


def _version_arg(text: str) -> str:
    from bridge.ota.bundle import is_version

    if not is_version(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not MAJOR.MINOR.PATCH (digits only, e.g. 0.2.0)")
    return text


def _security_version_arg(text: str) -> int:
    from bridge.ota.bundle import MAX_SECURITY_VERSION

    if not (text.isascii() and text.isdigit()) or int(text) > MAX_SECURITY_VERSION:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number 0..{MAX_SECURITY_VERSION}")
    return int(text)


def _board_list_arg(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r}: board names separated by commas, e.g. virtual,virtual-panic")
    return list(dict.fromkeys(names))


def _add_release(sub, raw) -> None:
    p = sub.add_parser(
        "release", help="signed firmware bundles for over-the-air updates: keygen, build, verify",
        description="Signed firmware bundles for over-the-air updates.", formatter_class=raw,
        epilog=RELEASE_EPILOG)
    steps = p.add_subparsers(dest="release_command", metavar="STEP")
    steps.required = True

    k = steps.add_parser(
        "keygen", help="make the release key: release.key (signs bundles, keep offline) and release.pub",
        formatter_class=raw, epilog=(
            "Example:\n  baochay-provision release keygen --out /media/offline-usb\n\n"
            "Writes DIR/release.key (mode 0600) and DIR/release.pub (0644). Put release.pub on the bridge\n"
            "(config key ota.release_key); every bundle signed with release.key is then accepted there.\n"
            "An existing key is never replaced without --force."))
    k.add_argument("--out", type=Path, required=True, metavar="DIR", help="where the two key files go")
    k.add_argument("--force", action="store_true",
                   help="replace an existing key: bundles signed with the old one are refused from then on")

    b = steps.add_parser(
        "build", help="compile the firmware and write a signed bundle: DIR/baochay-<version>.bcb",
        formatter_class=raw, epilog=(
            "Examples:\n"
            "  baochay-provision release build --key release.key --version 0.2.0 --security-version 2\n"
            "  baochay-provision release build --key release.key --version 0.2.0 --security-version 2 \\\n"
            "      --boards virtual,virtual-panic,virtual-transmitter --out build/release-virtual\n\n"
            "Without --boards the bundle is for every chip board in boards.yaml. One bundle is for chips or\n"
            "for virtual boards, not both: a virtual board's payload carries the host-only modules a chip's\n"
            "leaves out. A device never takes a bundle whose security version is below its own; raise it\n"
            "with a release that fixes a vulnerability. SOURCE_DATE_EPOCH, when set, is the bundle's time:\n"
            "the same sources then make the same bundle, byte for byte."))
    b.add_argument("--key", type=Path, required=True, metavar="FILE", help="the release key (release.key)")
    b.add_argument("--version", type=_version_arg, required=True,
                   help="the application version the bundle carries (MAJOR.MINOR.PATCH)")
    b.add_argument("--security-version", type=_security_version_arg, required=True, metavar="N",
                   help="0..65535; devices refuse bundles below the highest they have run")
    b.add_argument("--boards", type=_board_list_arg, metavar="NAMES",
                   help="board names, comma-separated (default: every chip board in --boards-file)")
    b.add_argument("--min-base", type=_version_arg, metavar="VERSION", default=None,
                   help="the oldest MicroPython a device must run to take the bundle (default 1.24.0)")
    b.add_argument("--out", type=Path, metavar="DIR", help="default: build/release")
    b.add_argument("--boards-file", type=Path, default=boards_mod.BOARDS_YAML, metavar="FILE",
                   help="board definitions (default: boards.yaml of this repository)")

    v = steps.add_parser(
        "verify", help="check a bundle as the bridge does; exit 0 only when it is accepted",
        formatter_class=raw, epilog=(
            "Example:\n  baochay-provision release verify build/release/baochay-0.2.0.bcb --pub release.pub\n\n"
            "A refused bundle prints `error: bundle refused: REASON: ...` and exits 1; REASON is one of\n"
            "not-a-bundle, bad-manifest, bad-signature, bad-hash."))
    v.add_argument("bundle", type=Path, metavar="BUNDLE", help="a .bcb file")
    v.add_argument("--pub", type=Path, required=True, metavar="FILE", help="the release public key (release.pub)")


def cmd_boards(a) -> int:
    if a.wiring:
        from .wiring import wiring_markdown

        print(wiring_markdown(boards_mod.get_board(a.wiring, a.boards)), end="")
        return 0
    for b in boards_mod.load_boards(a.boards).values():
        pins = ", ".join(f"{k}={_pin_text(v)}" for k, v in b.pins.items()) or "(driven from the console)"
        print(f"{b.name}")
        print(f"  {b.description}")
        print(f"  chip {b.chip}, flash {b.flash_size}, firmware at 0x{b.firmware_offset:x}, filesystem "
              f"0x{b.filesystem.offset:x}+{b.filesystem.size // 1024} KiB ({b.filesystem.block_count} blocks), "
              f"usb {b.usb}")
        print(f"  sensors: {', '.join(b.sensors) or 'none'}; power {b.power}; supervision {b.supervision}")
        print(f"  pins: {pins}")
    return 0


def _pin_text(v: dict) -> str:
    keys = [k for k in ("pin", "scl", "sda", "tx", "rx") if k in v]
    return "/".join(f"{k if k != 'pin' else ''}{'GPIO' if k == 'pin' else ':'}{v[k]}" for k in keys)


def cmd_new_device(a) -> int:
    port = a.broker_port or (1883 if a.no_tls else 8883)
    net = Network(broker_host=a.broker_host, broker_port=port, tls=not a.no_tls, keepalive=a.keepalive,
                  wifi_ssid=a.wifi_ssid, wifi_password=a.wifi_password or os.environ.get("BAOCHAY_WIFI_PASSWORD"),
                  telemetry_s=a.telemetry_s, cancel_window_s=a.cancel_window_s, test_rig=a.test_rig,
                  test_s=a.test_s, panel_confirm_ms=a.panel_confirm_ms,
                  ca_cert=read_ca_cert(a.ca_cert) if a.ca_cert else None)
    if a.csv:
        r = create_from_csv(a.csv, a.devices_dir, net, a.boards)
        for dev in r.created:
            print(f"created {dev}")
        for err in r.errors:
            print(f"error: {a.csv}: {err}", file=sys.stderr)
        for w in r.warnings:
            print(f"warning: {a.csv}: {w}", file=sys.stderr)
        print(f"{len(r.created)} device(s) created in {a.devices_dir}, {len(r.errors)} row(s) refused")
        return 1 if r.errors else 0
    missing = [f"--{k.replace('_', '-')}" for k in ("id", "board", "building", "address", "lat", "lon")
               if getattr(a, k) in (None, "")]
    if missing:
        raise ProvisionError(f"new-device needs {', '.join(missing)} (or --csv FILE)")
    dc09 = {k: v for k, v in (("account", a.dc09_account), ("receiver", a.dc09_receiver),
                                ("line", a.dc09_line)) if v}
    address, said = current_address(a.address, a.province or "")
    for w in said:
        print(f"warning: {w}", file=sys.stderr)
    site = Site(building=a.building, address=address, floor=a.floor, room=a.room, lat=a.lat, lon=a.lon,
                acc=int(round(a.acc)), contact_phone=a.contact_phone, province=a.province, dc09=dc09)
    d = create_device(a.devices_dir, a.id, a.board, site, net, a.boards)
    print(f"created {a.id}: {d / 'device.json'} (key and broker password inside, mode 0600)")
    print(f"next: register --device {a.id}, then flash --device {a.id} --port PORT")
    return 0


def _device_and_board(a):
    device = load_device(a.devices_dir, a.device)
    board = boards_mod.get_board(device.get("board", ""), a.boards)
    return device, board


def _build(a, device, board, out: Path | None = None):
    from .image import DEFAULT_BUILD_DIR, build

    out = out or DEFAULT_BUILD_DIR / device["dev"]
    mq = device.get("mqtt") or {}
    if mq.get("tls") and not mq.get("ca") and not mq.get("tls_insecure"):
        print(f"warning: {device['dev']} uses TLS but has no CA certificate: it will show a config fault and "
              f"not connect. Give one: build --device {device['dev']} --ca-cert FILE", file=sys.stderr)
    r = build(device, board, out, show_progress=True, ca_der=load_ca(a.devices_dir, device["dev"], device))
    print(f"image {r.image}: {r.image_bytes // 1024} KiB, {r.block_count} blocks of {board.filesystem.block_size}; "
          f"{len(r.files)} files; used {r.used_bytes // 1024} KiB, free {r.free_bytes // 1024} KiB")
    return r


def cmd_build(a) -> int:
    if a.ca_cert:
        set_ca(a.devices_dir, a.device, read_ca_cert(a.ca_cert))
        print(f"{a.device}: CA certificate {a.ca_cert} stored in its record")
    device, board = _device_and_board(a)
    _build(a, device, board, a.out)
    return 0


def cmd_flash(a) -> int:
    from . import flashing
    from .serialport import check_port

    device, board = _device_and_board(a)
    serial_flash = not board.is_virtual and not a.merge
    if serial_flash:
        if not a.port:
            raise ProvisionError("flash needs --port (e.g. /dev/ttyUSB0), or --merge for a factory image")
        check_port(a.port)  # before the build: a missing cable should not cost a compile
    if a.merge and a.firmware is None:
        raise ProvisionError("--merge needs --firmware: the merged image starts at 0x0 and would otherwise "
                             "erase the MicroPython firmware")
    r = _build(a, device, board)
    if board.is_virtual:
        dest = Path(a.port) if a.port else flashing.vboard_image_path(device["dev"])
        flashing.flash_virtual(r.image, dest)
        print(f"virtual board image written: {dest}")
        return 0
    if a.merge:
        out = a.out or r.image.parent / "merged.bin"
        flashing.merge(board, r.image, a.firmware, out)
        print(f"merged image {out}: write it at 0x0, e.g. python -m esptool --chip {board.chip} write-flash 0x0 {out}")
        return 0
    flashing.flash_serial(a.port, board, r.image, a.firmware, baud=a.baud, connect_attempts=a.connect_attempts,
                          stub=a.stub)
    print(f"flashed {device['dev']} on {a.port}; next: verify --device {device['dev']} --port {a.port}")
    return 0


def cmd_verify(a) -> int:
    from .verify import Expected, passed, summary_table, verify

    exp = Expected(fw=a.fw)
    if a.device:
        device, exp.board = _device_and_board(a)
        exp.dev = device["dev"]
    elif a.board:
        exp.board = boards_mod.get_board(a.board, a.boards)
    checks = verify(a.port, exp, baud=a.baud, net_timeout=a.net_timeout, test_timeout=a.test_timeout,
                    bridge=a.bridge, bridge_timeout=a.bridge_timeout,
                    reply_timeout=a.reply_timeout)
    print(summary_table(checks))
    return 0 if passed(checks) else 1


def cmd_register(a) -> int:
    from .register import register

    device, board = _device_and_board(a)
    passwd, acl = a.passwd_file, a.acl_file
    if a.broker_dir:
        passwd = passwd or a.broker_dir / "passwd"
        acl = acl or a.broker_dir / "acl"
    if a.no_registry and not (passwd or acl):
        raise ProvisionError("nothing to do: --no-registry and no --broker-dir/--passwd-file/--acl-file")
    done = register(device, board, load_record(a.devices_dir, a.device), None if a.no_registry else a.db,
                    passwd, acl)
    for line in done:
        print(line)
    if passwd:
        print("reload the broker to apply: sudo systemctl reload mosquitto  (or kill -HUP its pid)")
    return 0


def cmd_broker_config(a) -> int:
    from .broker import BrokerConfig, write_broker_config

    res = write_broker_config(BrokerConfig(
        out_dir=a.out, cafile=a.cafile, certfile=a.certfile, keyfile=a.keyfile, tls_port=a.tls_port,
        bind_address=a.bind, bridge_user=a.bridge_user, local_port=a.local_port or None,
        persistence_location=a.persistence_location))
    for f in res.files:
        print(f"wrote {f}")
    print(f"the bridge logs in as '{a.bridge_user}' with the password in {res.bridge_password_file}")
    if res.commands:
        print("Mosquitto runs as its own user and must read the password file and ACL; run:")
        for c in res.commands:
            print(f"  {c}")
    return 0


def cmd_release(a) -> int:
    from . import release

    if a.release_command == "keygen":
        kp = release.keygen(a.out, force=a.force)
        print(f"release key  {kp.key} (mode 0600: keep it offline, with whoever signs releases)")
        print(f"public key   {kp.pub}")
        print(f"fingerprint  {kp.fingerprint}")
        print(f"next: put {kp.pub} on the bridge (config key ota.release_key); sign bundles with "
              f"release build --key {kp.key}")
        return 0
    if a.release_command == "build":
        r = release.build_release(a.key, a.version, a.security_version, a.boards,
                                  min_base=a.min_base or release.DEFAULT_MIN_BASE,
                                  out_dir=a.out or release.DEFAULT_RELEASE_DIR, boards_file=a.boards_file,
                                  show_progress=True)
    else:
        r = release.verify_release(a.bundle, a.pub)
    for line in release.summary(r):
        print(line)
    return 0


COMMANDS = {
    "boards": cmd_boards,
    "new-device": cmd_new_device,
    "build": cmd_build,
    "flash": cmd_flash,
    "verify": cmd_verify,
    "register": cmd_register,
    "broker-config": cmd_broker_config,
    "release": cmd_release,
}


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    try:
        return COMMANDS[a.command](a)
    except ProvisionError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

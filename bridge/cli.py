"""`baochay-bridge`: run the bridge, look at it, manage its devices, send commands."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from firmware import protocol

from . import config, db
from .facility_types import FACILITY_TYPES, HAZARDS
from .registry import FIELDS, Registry, RegistryError

log = logging.getLogger("bridge")


def _db(args) -> str:
    try:
        return config.db_path_from(args.config, args.db)
    except config.ConfigError as e:
        sys.exit(f"error: {e}")


def _existing_db(args) -> str:
    path = _db(args)
    if not Path(path).exists():
        sys.exit(f"error: no bridge database at {path} (run the bridge or add devices first)")
    return path


def cmd_run(args) -> int:
    from . import logs
    from .service import Bridge

    try:
        cfg = config.load(args.config)
    except config.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logs.setup(cfg["log_level"])
    stop = threading.Event()

    def on_signal(signum, frame):
        log.info("signal received, stopping", extra={"signal": signum})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        bridge = Bridge(cfg)
    except Exception as e:
        log.error("bridge cannot start", extra={"error": f"{type(e).__name__}: {e}"})
        return 2
    bridge.start()
    while not stop.wait(0.5):
        pass
    bridge.stop()
    return 0


def cmd_status(args) -> int:
    from .status import collect, render

    path = _existing_db(args)
    conn = db.connect(path, readonly=True)
    try:
        data = collect(conn, db_path=path)
    finally:
        conn.close()
    if args.json:
        print(json.dumps(data, indent=1, default=str))
    else:
        print(render(data))
    return 0


def _event_line(r) -> str:
    t = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["received_at"]))
    extra = r["incident"] or r["reason"] or ""
    return f"{t}  {r['id']:<28} {r['type']:<8} {r['cause']:<8} {r['stage']:<9} {extra}".rstrip()


def cmd_events(args) -> int:
    conn = db.connect(_existing_db(args), readonly=True)
    rows = conn.execute("SELECT * FROM (SELECT * FROM events ORDER BY seq DESC LIMIT ?) ORDER BY seq",
                        (args.last,)).fetchall()
    last_seq = 0
    for r in rows:
        print(_event_line(r), flush=True)
        last_seq = r["seq"]
    if not args.follow:
        return 0
    if not rows:
        last_seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
    stages: dict[str, str] = {}
    try:
        while True:
            time.sleep(0.5)
            for r in conn.execute("SELECT * FROM events WHERE seq>? ORDER BY seq", (last_seq,)):
                print(_event_line(r), flush=True)
                last_seq = r["seq"]
                stages[r["id"]] = r["stage"]
            # stage changes of recent events (forwarded -> accepted ...)
            for r in conn.execute("SELECT * FROM events WHERE stage_at>? ORDER BY stage_at", (time.time() - 5,)):
                if r["id"] in stages and stages[r["id"]] != r["stage"]:
                    stages[r["id"]] = r["stage"]
                    print(_event_line(r), flush=True)
    except KeyboardInterrupt:
        return 0


def cmd_devices(args) -> int:
    reg = Registry(_db(args))
    try:
        if args.action == "list":
            devs = reg.list()
            if args.json:
                print(json.dumps([d.public() for d in devs], indent=1))
                return 0
            from .status import _table

            print("\n".join(_table(
                ["id", "board", "building", "floor", "room", "class", "lat", "lon", "phone", "province"],
                [[d.id, d.board, d.building, d.floor, d.room, d.supervision, d.lat, d.lon, d.contact_phone,
                  d.province] for d in devs])))
            return 0
        if args.action == "add":
            rec = {k: getattr(args, k) for k in FIELDS if getattr(args, k, None) is not None}
            if rec.get("key") == "-":
                rec["key"] = sys.stdin.readline().strip()
            elif rec.get("key", "").startswith("@"):
                try:
                    rec["key"] = Path(rec["key"][1:]).read_text().strip()
                except OSError as e:
                    print(f"error: cannot read the key file {rec['key'][1:]}: {e.strerror}", file=sys.stderr)
                    return 2
            else:  # a key in argv is in every process listing of the host, and in the shell's history
                print("error: give the key as --key @FILE or --key - (stdin), never on the command line",
                      file=sys.stderr)
                return 2
            said: list[str] = []
            try:
                dev = reg.upsert(rec, said)
            except RegistryError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            for w in said:
                print(f"warning: {w}", file=sys.stderr)
            print(f"device {dev.id} registered" + (f" at {dev.address}" if dev.ward_code else ""))
            return 0
        if args.action == "import":
            res = reg.import_csv(args.file)
            for line, msg in res.errors:
                print(f"{args.file}:{line}: {msg}", file=sys.stderr)
            for line, msg in res.warnings:
                print(f"{args.file}:{line}: warning: {msg}", file=sys.stderr)
            print(f"imported {len(res.added)} device(s), {sum(1 for ln, _ in res.errors if ln > 1)} bad row(s)")
            return 0 if not res.errors else 1
        if args.action == "remove":
            ok = reg.remove(args.id)
            print(f"device {args.id} {'removed' if ok else 'was not registered'}")
            return 0 if ok else 1
    finally:
        reg.close()
    return 2


def cmd_faults(args) -> int:
    from .faults import clear_by_id

    conn = db.connect(_existing_db(args))
    if args.clear:
        n = clear_by_id(conn, args.clear)
        print(f"fault {args.clear} {'cleared' if n else 'was not open'}")
        return 0 if n else 1
    from .status import _ago, _table

    now = time.time()
    rows = conn.execute("SELECT * FROM faults WHERE open=1 OR ? ORDER BY ts", (1 if args.all else 0,)).fetchall()
    print("\n".join(_table(["#", "since", "open", "device", "sink", "kind", "reason"],
                           [[r["id"], _ago(r["ts"], now), "yes" if r["open"] else "no", r["device"] or "",
                             r["sink"] or "", r["kind"], r["reason"]] for r in rows])))
    return 0


def cmd_alarms(args) -> int:
    from .alarms import CloseError, close, undelivered

    conn = db.connect(_existing_db(args))
    if args.action == "close":
        try:
            sinks = close(conn, args.id, args.why or "")
        except CloseError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"closed {args.id} at {', '.join(sinks)}: no more attempts; its delivery fault is cleared")
        log.warning("alarm closed by an operator", extra={"event": args.id, "why": args.why, "sinks": sinks})
        return 0
    from .status import _ago, _table

    now = time.time()
    rows = undelivered(conn)
    if not rows:
        print("every stored event was accepted by its sinks")
        return 0
    print("\n".join(_table(
        ["event", "type", "sink", "state", "since", "attempts", "last error / why closed"],
        [[r["event_id"], r["type"], r["sink"],
          r["state"] + (" (failed, still trying)" if r["state"] == "pending" and r["failed_at"] else ""),
          _ago(r["created_at"], now), r["attempts"], (r["closed_why"] or r["last_error"] or "")[:80]]
         for r in rows])))
    return 0


def _facility_text(f: dict) -> list[str]:
    """One facility as `facilities show` prints it: every field, in the order 114 reads them."""
    from .facility_types import hazard_name, type_name

    def n(v) -> str:
        return "-" if v is None else str(v)

    hazards = [hazard_name(h, 1) for h in f["hazards"]] + ([f["hazards_other"]] if f["hazards_other"] else [])
    lines = [f"facility   {f['id']}", f"name       {f['name'] or '-'}",
             f"type       {f['type'] + ' (' + type_name(f['type'], 1) + ')' if f['type'] else '-'}",
             f"floors     {n(f['floors_above'])} above ground, {n(f['floors_below'])} below",
             f"people     {n(f['occupancy_day'])} by day, {n(f['occupancy_night'])} by night",
             f"hazards    {'; '.join(hazards) or '- (not recorded)'}",
             "water      " + ("; ".join(f["water_sources"]) or "-")]
    lines += [f"contact {i}  " + " ".join(x for x in (c["name"], c["phone"]) if x) for i, c in enumerate(f["contacts"], 1)]
    return lines


def cmd_facilities(args) -> int:
    from .facilities import INT_FIELDS, FacilityError, all_facilities, get, parse_contact, put

    conn = db.connect(_db(args))
    try:
        if args.action == "set":
            record = {k: getattr(args, k) for k in ("type", *INT_FIELDS, "hazards_other")
                      if getattr(args, k) is not None}
            if args.hazard is not None:
                record["hazards"] = args.hazard
            if args.water is not None:
                record["water_sources"] = args.water
            try:
                contacts = [parse_contact(c) for c in args.contact] if args.contact else None
                with db.transaction(conn):
                    warnings = put(conn, args.id, args.name, contacts, **record)
            except FacilityError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            for w in warnings:
                print(f"warning: {w}", file=sys.stderr)
            print(f"facility {args.id} saved")
            return 0
        if args.action == "show":
            f = get(conn, args.id)
            if f is None:
                print(f"error: no facility {args.id!r} (see `facilities list`)", file=sys.stderr)
                return 1
            print(json.dumps(f, indent=1, ensure_ascii=False) if args.json else "\n".join(_facility_text(f)))
            return 0
        rows = all_facilities(conn)
        if args.json:
            print(json.dumps(rows, indent=1, ensure_ascii=False))
            return 0
        from .status import _table

        def n(v) -> str:
            return "-" if v is None else str(v)

        print("\n".join(_table(
            ["facility", "name", "type", "floors +/-", "people day/night", "hazards", "water",
             "contacts, in calling order"],
            [[f["id"], f["name"], f["type"], f"{n(f['floors_above'])}/{n(f['floors_below'])}",
              f"{n(f['occupancy_day'])}/{n(f['occupancy_night'])}",
              ", ".join(f["hazards"] + ([f["hazards_other"]] if f["hazards_other"] else [])),
              "; ".join(f["water_sources"]),
              "; ".join(f"{c['name']} {c['phone']}".strip() for c in f["contacts"])] for f in rows])))
        return 0
    finally:
        conn.close()


def cmd_cmd(args) -> int:
    from .commands import send_command

    try:
        cfg = config.load(args.config)
    except config.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cargs = json.loads(args.args) if args.args else {}
    try:
        ctr = send_command(cfg, args.device, args.command, cargs)
    except (LookupError, ValueError, OSError, TimeoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.command} sent to {args.device} (ctr {ctr})")
    return 0


def cmd_ota(args) -> int:
    """Firmware updates (docs/ota.md): the running bridge's OTA worker carries out what these write."""
    from .ota import rollout as ro
    from .ota.bundle import BundleError
    from .status import _ago, _table

    try:
        cfg = config.load(args.config)
    except config.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.db:
        cfg["db"] = args.db
    conn = db.connect(cfg["db"], durable=True)
    try:
        if args.action == "upload":
            b = ro.upload(conn, cfg, args.bundle)
            print(f"bundle {b.version} uploaded: security version {b.security_version}, boards "
                  f"{', '.join(b.boards)}, {b.size} bytes, sha256 {b.sha256}")
            print(f"next: baochay-bridge ota rollout {b.version} --to devices=ID[,ID] (or building=, board=, all)")
        elif args.action == "rollout":
            rid = ro.start_rollout(conn, args.version, args.to, args.canary, args.max_fail)
            st = ro.status(conn, rid)[0]
            n, canary = len(st["devices"]), sum(d["canary"] for d in st["devices"])
            print(f"rollout {rid}: {args.version} to {n} device(s), {canary} in the canary first; halts when more "
                  f"than {args.max_fail:g}% fail. Watch it: baochay-bridge ota status")
        elif args.action in ("pause", "resume", "abort"):
            state = {"pause": "paused", "resume": "running", "abort": "aborted"}[args.action]
            rid = ro.set_state(conn, args.rollout, state, args.why or "")
            print(f"rollout {rid} {state}")
        else:
            rows = ro.status(conn, args.rollout)
            refused = ro.refused_uploads(conn) if args.rollout is None else []
            if args.json:
                print(json.dumps({"rollouts": rows, "refused_uploads": refused}, indent=2, default=str))
                return 0
            if not rows:
                print("no rollouts yet: baochay-bridge ota upload BUNDLE, then ota rollout VERSION --to ...")
            now = time.time()
            for r in rows:
                counts = ", ".join(f"{k} {v}" for k, v in sorted(r["counts"].items()))
                print(f"rollout {r['id']}: {r['version']} to {r['target']} - {r['state'].upper()}"
                      f"{': ' + r['reason'] if r['reason'] else ''} ({counts})")
                print("\n".join(_table(
                    ["device", "canary", "state", "progress", "since", "reason"],
                    [[d["dev"], "yes" if d["canary"] else "", d["state"],
                      f"{d['pct']}%" if d["pct"] is not None and d["state"] in ("offered", "downloading", "waiting")
                      else "", _ago(d["updated_at"], now), d["reason"] or ""] for d in r["devices"]])))
            if refused:
                print("bundles refused at upload (latest first):")
                print("\n".join(_table(["file", "reason", "when", "detail"],
                                       [[Path(r["file"]).name, r["reason"], _ago(r["at"], now), r["detail"]]
                                        for r in refused])))
        return 0
    except (ro.OtaError, BundleError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {e.filename or ''}: {e.strerror}", file=sys.stderr)
        return 1
    finally:
        conn.close()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="baochay-bridge", description=__doc__)
    sub = p.add_subparsers(dest="verb", required=True)

    def with_config(sp, need_db_option=True):
        sp.add_argument("--config", "-c", default=os.environ.get("BAOCHAY_CONFIG"),
                        help="bridge YAML config (or $BAOCHAY_CONFIG)")
        if need_db_option:
            sp.add_argument("--db", help="the bridge database (default: the config's `db`)")
        return sp

    sp = with_config(sub.add_parser("run", help="run the bridge"), need_db_option=False)
    sp.set_defaults(fn=cmd_run)
    sp = with_config(sub.add_parser("status", help="devices, open alarms, sinks, faults (from the database)"))
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_status)
    sp = with_config(sub.add_parser("events", help="recent events; --follow to keep watching"))
    sp.add_argument("--follow", "-f", action="store_true")
    sp.add_argument("--last", type=int, default=20)
    sp.set_defaults(fn=cmd_events)

    sp = with_config(sub.add_parser("devices", help="the device registry"))
    dsub = sp.add_subparsers(dest="action", required=True)
    a = dsub.add_parser("add", help="add or replace one device")
    a.add_argument("id")
    a.add_argument("--key", required=True, help="@FILE: read the 64 hex digits from FILE; '-': from stdin")
    for k in FIELDS:
        if k not in ("id", "key"):
            a.add_argument("--" + k.replace("_", "-"), dest=k)
    lst = dsub.add_parser("list", help="list devices (never their keys)")
    lst.add_argument("--json", action="store_true")
    imp = dsub.add_parser("import", help="import a CSV file (header row with the registry column names)")
    imp.add_argument("file")
    rm = dsub.add_parser("remove", help="remove one device")
    rm.add_argument("id")
    for x in (a, lst, imp, rm):
        with_config(x)
    sp.set_defaults(fn=cmd_devices)

    sp = with_config(sub.add_parser("faults", help="operator faults"))
    sp.add_argument("--all", action="store_true", help="also cleared ones")
    sp.add_argument("--clear", type=int, metavar="ID", help="acknowledge and close one fault")
    sp.set_defaults(fn=cmd_faults)

    sp = with_config(sub.add_parser("alarms", help="events not (yet) accepted by 114; close one by hand"))
    asub = sp.add_subparsers(dest="action", required=True)
    al = asub.add_parser("list", help="deliveries not accepted: pending, failed and still trying, closed")
    cl = asub.add_parser("close", help="stop sending an event the 114 side never accepted (say why)")
    cl.add_argument("id", help="the event id, as `alarms list` or `status` shows it")
    cl.add_argument("--why", required=True, help="why it is closed, e.g. 'called 114 by phone at 10:42'")
    for x in (al, cl):
        with_config(x)
    sp.set_defaults(fn=cmd_alarms)

    sp = with_config(sub.add_parser("facilities", help="facilities and the contacts told of their alarms"))
    fsub = sp.add_subparsers(dest="action", required=True)
    fs = fsub.add_parser("set", help="create or update a facility (its id is the devices' building)")
    fs.add_argument("id")
    fs.add_argument("--name", help="the facility's name, as a contact reads it")
    fs.add_argument("--contact", action="append", metavar="NAME=PHONE",
                    help="a contact, in calling order (repeat; replaces the list): 'Nguyen Van A=+84901234567'")
    fs.add_argument("--type", help=f"the kind of facility (Decree 105/2025 Annex I kinds): {', '.join(FACILITY_TYPES)}")
    fs.add_argument("--floors-above", dest="floors_above", metavar="N", help="floors above ground ('' : unknown)")
    fs.add_argument("--floors-below", dest="floors_below", metavar="N", help="floors below ground (basements)")
    fs.add_argument("--occupancy-day", dest="occupancy_day", metavar="N", help="people there on a typical day")
    fs.add_argument("--occupancy-night", dest="occupancy_night", metavar="N", help="people there on a typical night")
    fs.add_argument("--hazard", action="append", metavar="CODE",
                    help=f"a hazard there (repeat; replaces the list; '' clears it): {', '.join(HAZARDS)}")
    fs.add_argument("--hazard-other", dest="hazards_other", metavar="TEXT", help="other hazards, in words")
    fs.add_argument("--water", action="append", metavar="TEXT",
                    help="a water source for firefighting, nearest first (repeat; replaces the list; '' clears "
                         "it): 'Trụ nước cổng chính, 20 m'")
    fl = fsub.add_parser("list", help="facilities, their records and contacts")
    fl.add_argument("--json", action="store_true")
    fw = fsub.add_parser("show", help="one facility's whole record")
    fw.add_argument("id")
    fw.add_argument("--json", action="store_true")
    for x in (fs, fl, fw):
        with_config(x)
    sp.set_defaults(fn=cmd_facilities)

    sp = with_config(sub.add_parser("ota", help="firmware updates: upload a bundle, roll it out, watch it"))
    osub = sp.add_subparsers(dest="action", required=True)
    up = osub.add_parser("upload", help="check a bundle with the release key (ota.release_key) and keep it")
    up.add_argument("bundle", help="a .bcb file from `baochay-provision release build`")
    rl = osub.add_parser("rollout", help="offer an uploaded version to devices, a canary first")
    rl.add_argument("version")
    rl.add_argument("--to", required=True, help="building=NAME[,NAME], board=NAME[,NAME], devices=ID[,ID] or all")
    rl.add_argument("--canary", type=float, default=10.0, metavar="PCT",
                    help="this share of the devices (at least one) is updated and confirmed first (default 10)")
    rl.add_argument("--max-fail", dest="max_fail", type=float, default=0.0, metavar="PCT",
                    help="halt when more than this share fails or rolls back (default 0: the first failure halts)")
    stt = osub.add_parser("status", help="rollouts and each device's update state")
    stt.add_argument("--rollout", type=int, metavar="ID")
    stt.add_argument("--json", action="store_true")
    ctl = []
    for verb, what in (("pause", "stop offering (downloads under way go on)"),
                       ("resume", "go on with a paused or halted rollout"),
                       ("abort", "end a rollout; devices not yet installing are skipped")):
        x = osub.add_parser(verb, help=what)
        x.add_argument("--rollout", type=int, metavar="ID", help="default: the latest")
        x.add_argument("--why", help="kept with the rollout")
        ctl.append(x)
    for x in (up, rl, stt, *ctl):
        with_config(x)
    sp.set_defaults(fn=cmd_ota)

    sp = with_config(sub.add_parser("cmd", help="send a signed command to a device"), need_db_option=False)
    sp.add_argument("device")
    sp.add_argument("command", choices=protocol.COMMANDS)
    sp.add_argument("--args", help="JSON object of arguments (for config)")
    sp.set_defaults(fn=cmd_cmd)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())

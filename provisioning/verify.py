"""The installer's last step: ask the device over its serial console whether it is what we provisioned,
sees its sensors, reaches the broker, and passes a self-test. One pass/fail line per check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from firmware import protocol
from stack.procs import wait_until

from .boards import Board
from .console import ConsoleError, DeviceConsole

REPLY_ATTEMPTS = 2  # a command is sent again once: a board that has just booted may miss it


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Expected:
    dev: str | None = None
    board: Board | None = None
    fw: str | None = None


def reported_sensors(value: Any) -> dict[str, str] | None:
    """{sensor: "ok" or what is wrong} from the device's status: {name: "ok"/detail} (or true), or a
    list of names from firmware that reported only what is fitted."""
    if isinstance(value, list):
        return {str(s): "ok" for s in value}
    if isinstance(value, dict):
        return {str(k): "ok" if v is True or v == "ok" else str(v or "not working") for k, v in value.items()}
    return None


def _identity_checks(status: dict[str, Any], exp: Expected) -> list[Check]:
    checks = []
    dev = status.get("dev")
    if not dev:
        checks.append(Check("device id", False, "the device has no configuration (/device.json): flash it"))
    elif exp.dev and dev != exp.dev:
        checks.append(Check("device id", False, f"this is '{dev}', expected '{exp.dev}': wrong board in hand?"))
    else:
        checks.append(Check("device id", True, dev))
    fw = status.get("fw")
    if not fw:
        checks.append(Check("firmware", False, "no firmware version reported"))
    elif exp.fw and fw != exp.fw:
        checks.append(Check("firmware", False, f"version {fw}, expected {exp.fw}"))
    else:
        checks.append(Check("firmware", True, str(fw)))
    board = status.get("board")
    if exp.board and board != exp.board.name:
        checks.append(Check("board", False, f"reports '{board}', expected '{exp.board.name}'"))
    else:
        checks.append(Check("board", bool(board), str(board)))
    if exp.board is not None:
        want = set(exp.board.sensors)
        got = reported_sensors(status.get("sensors"))
        if got is None:
            checks.append(Check("sensors", not want, "the firmware did not report its sensors"
                                if want else "none fitted"))
        elif want - got.keys():
            checks.append(Check("sensors", False, f"missing: {', '.join(sorted(want - got.keys()))} "
                                                  f"(check the wiring in docs/installer-guide.md)"))
        elif any(got[s] != "ok" for s in want):
            bad = "; ".join(f"{s}: {got[s]}" for s in sorted(want) if got[s] != "ok")
            checks.append(Check("sensors", False, f"{bad} (check the wiring in docs/installer-guide.md)"))
        else:
            checks.append(Check("sensors", True, ", ".join(sorted(want)) or "none fitted"))
    fault = status.get("fault")
    checks.append(Check("no fault", not fault, "none" if not fault else str(fault)))
    return checks


def _wait_connected(con: DeviceConsole, status: dict[str, Any], timeout: float) -> tuple[Check, dict]:
    seen = [status]

    def connected() -> bool:
        if seen[-1].get("mqtt") != "connected":
            seen.append(con.ask("status", attempts=REPLY_ATTEMPTS))
        return seen[-1].get("mqtt") == "connected"

    try:
        wait_until(connected, timeout, 0.5, what="broker connection")
    except AssertionError:
        pass
    status = seen[-1]
    net = status.get("net")
    if status.get("mqtt") == "connected":
        return Check("network + broker", True, "connected"), status
    why = "no network (Wi-Fi name/password, signal)" if net in (False, "down", None) else \
        "network up, broker not reachable or refused the login (register the device, check host/port/TLS)"
    return Check("network + broker", False, f"mqtt {status.get('mqtt')!r} after {timeout:.0f} s: {why}"), status


def _self_test(con: DeviceConsole, timeout: float, connected: bool, bridge: bool,
               bridge_timeout: float) -> list[Check]:
    since = con.mark()
    reply = con.ask("selftest", attempts=REPLY_ATTEMPTS)
    if not reply.get("ok"):
        return [Check("self-test", False, reply.get("error", "refused"))]
    ev = con.first(lambda e: e.get("ev") == "event" and e.get("type") == "test", timeout, since=since)
    if ev is None:
        return [Check("self-test", False, f"no test event within {timeout:.0f} s")]
    # the verdict: in the reply (older firmware) or on the line the device prints when it is done
    result = reply.get("result") or con.first("selftest", 5, since=since)
    bad = [k for k, v in result.items() if (v == "fail" or v is False) and k not in ("pass", "ok")] \
        if isinstance(result, dict) and result.get("pass") is False else None
    checks = [Check("self-test", False, "failed: " + (", ".join(bad) or "see the device console")) if bad is not None
              else Check("self-test", True, f"test event {ev.get('id')}")]
    if connected:
        sent = con.first("sent", timeout, since=since, id=ev.get("id"))
        checks.append(Check("broker accepted", sent is not None,
                            "test event published" if sent else
                            "the broker did not acknowledge the test event (ACL or password?)"))
    if bridge:
        # any bridge stage from `stored` on: the bridge holds the event
        ack = con.first(lambda e: e.get("ev") == "ack" and e.get("id") == ev.get("id")
                        and protocol.durable(e.get("stage")), bridge_timeout, since=since)
        checks.append(Check("bridge stored", ack is not None,
                            f"ack {ack.get('stage')}" if ack else
                            f"no ack within {bridge_timeout:.0f} s: is the device registered and the bridge up?"))
    return checks


def verify(port: str, exp: Expected, baud: int = 115200, net_timeout: float = 30.0,
           test_timeout: float = 10.0, bridge: bool = False, bridge_timeout: float = 15.0,
           reply_timeout: float = 3.0) -> list[Check]:
    with DeviceConsole(port, baud, reply_timeout) as con:
        try:
            status: dict[str, Any] = con.ask("status", attempts=REPLY_ATTEMPTS)
        except ConsoleError as e:
            return [Check("console", False, _first_line(e))]
        checks = [Check("console", True, f"answers on {port}")]
        checks += _identity_checks(status, exp)
        try:
            net, status = _wait_connected(con, status, net_timeout)
            checks.append(net)
            checks += _self_test(con, test_timeout, net.ok, bridge, bridge_timeout)
        except ConsoleError as e:
            checks.append(Check("console", False, f"stopped answering: {_first_line(e)}"))
    return checks


def _first_line(e: Exception) -> str:
    """An error's first line: the console's errors go on with the serial log, too long for the table."""
    return str(e).splitlines()[0]


def passed(checks: list[Check]) -> bool:
    return bool(checks) and all(c.ok for c in checks)


def summary_table(checks: list[Check]) -> str:
    w = max(len(c.name) for c in checks)
    lines = [f"{'CHECK':<{w}}  RESULT  DETAIL", f"{'-' * w}  ------  ------"]
    lines += [f"{c.name:<{w}}  {'pass' if c.ok else 'FAIL':<6}  {c.detail}" for c in checks]
    bad = [c for c in checks if not c.ok]
    lines.append("")
    lines.append("PASS: the device is ready." if not bad else
                 f"FAIL: {len(bad)} of {len(checks)} checks failed: {', '.join(c.name for c in bad)}")
    return "\n".join(lines)

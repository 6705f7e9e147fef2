# Drives firmware/mqtt.py inside the MicroPython interpreter for the integration tests.
#   micropython mp_mqtt_driver.py   (then the JSON config as the first line on stdin: long command-line
#   arguments crash this interpreter)
# Config: host, port, client_id, user, password, keepalive, will [topic, payload, qos, retain],
# birth [topic, payload] (published retained, QoS 1, from on_connect), subscribe [[filter, qos], ...],
# max_packet, backoff_min_ms, backoff_max_ms.
# Commands, one JSON object per line on stdin:
#   {"cmd":"publish","topic":..,"payload":"text","qos":1,"retain":false,"tag":"x"}
#   {"cmd":"stats"}   {"cmd":"disconnect"}
# Prints one JSON object per line: {"ev":"state","up":..,"detail":..}, {"ev":"msg",..},
# {"ev":"birth","ok":..}, {"ev":"published","tag":..,"ok":..}, {"ev":"stats",..}, {"ev":"end"}.
import json
import sys

HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
sys.path.insert(0, HERE + "/../../firmware")

import asyncio  # noqa: E402

from mqtt import MQTTClient  # noqa: E402


def out(obj):
    print(json.dumps(obj))


async def publish(c, cmd):
    ok = await c.publish(cmd["topic"], cmd.get("payload", "").encode(), cmd.get("qos", 0),
                         cmd.get("retain", False))
    out({"ev": "published", "tag": cmd.get("tag"), "ok": ok})


async def commands(c, runner, stdin):
    while True:
        line = await stdin.readline()
        if not line:
            return  # the test went away: keep serving until killed
        cmd = json.loads(line)
        name = cmd.get("cmd")
        if name == "publish":
            asyncio.create_task(publish(c, cmd))
        elif name == "stats":
            s = c.stats
            s["ev"] = "stats"
            s["connected"] = c.connected
            out(s)
        elif name == "disconnect":
            await c.disconnect()
            await runner
            out({"ev": "end"})
            return


async def main():
    stdin = asyncio.StreamReader(sys.stdin)
    cfg = json.loads(await stdin.readline())
    will = cfg.get("will")
    if will:
        will = (will[0], will[1].encode(), will[2], will[3])
    c = MQTTClient(
        cfg.get("client_id", "dev-1"), cfg.get("host", "127.0.0.1"), cfg["port"],
        user=cfg.get("user"), password=cfg.get("password"), keepalive=cfg.get("keepalive", 30),
        will=will, max_packet=cfg.get("max_packet", 8192),
        backoff_min_ms=cfg.get("backoff_min_ms", 200), backoff_max_ms=cfg.get("backoff_max_ms", 1000),
        on_message=lambda t, p, r: out({"ev": "msg", "topic": t, "payload": p.decode(), "retained": r}),
        on_state=lambda up, d: out({"ev": "state", "up": up, "detail": d}),
    )
    birth = cfg.get("birth")

    async def on_connect():
        if birth:
            ok = await c.publish(birth[0], birth[1].encode(), 1, True)
            out({"ev": "birth", "ok": ok})

    c.on_connect = on_connect
    for topic, qos in cfg.get("subscribe", []):
        c.subscribe(topic, qos)
    runner = asyncio.create_task(c.run())
    await commands(c, runner, stdin)
    if not runner.done():
        await runner


asyncio.run(main())

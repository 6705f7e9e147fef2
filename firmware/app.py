# The application: wires the portable core (config, events, outbox, call point, console, MQTT) to a
# board and runs it as asyncio tasks. Knows nothing of the hardware beyond the board interface.
import asyncio
import gc
import json
import sys

from callpoint import CallPoint
from clock import Clock
from compat import ticks_add, ticks_diff, ticks_ms
from console import Console
from drivers.button import Debouncer
from drivers.indicator import Indicator
from events import EventFactory, ctr_of, read_signed
from outbox import Outbox
from persist import Counters
from sign import Signer

FW_VERSION = "0.1.0"
STAGE_RANK = {"sent": 1, "stored": 2, "forwarded": 3, "accepted": 4, "failed": 5}
ACK_TIMEOUT_MS = 30000  # resend an event the bridge has not stored within this time
BUTTON_POLL_MS = 10
REMOTE_CONFIG = ("telemetry_s", "cancel_window_s")


class App:
    def __init__(self, board, flash_dir="."):
        self.board = board
        self.dir = flash_dir
        self.console = Console(board.console_write)
        self.fault = None  # (cause, detail) of a standing device fault
        self.heap_peak = 0
        self.heap_base = 0
        self._mq_up = None
        self._incident = None  # first event of the open sensor incident
        self._open_faults = {}  # fault cause -> the fault event's id
        self.mq = None
        self.sensing = None
        self.rig = False
        self._ram = []  # events flash refused: still sent, from RAM
        self._sent_at = {}  # ctr -> ticks of PUBACK, until the bridge stores it
        self._stage = {}  # event id -> best stage seen
        self._fed = ticks_ms()
        self._owe_alarm = self._owe_cancel = False  # a button event the heap refused: raised next pass
        self.lowmem = 0  # MemoryErrors survived (a fragmented heap); shown by `heap` and `status`
        self._identify_until = None
        self._wake = asyncio.Event()
        self.last_event = None

    # -- start-up -----------------------------------------------------------------------------
    async def main(self):
        b = self.board
        self.counters = Counters(self.dir + "/state")
        boot = self.counters.next("boot")
        self.clock = Clock(boot)
        self.indicator = Indicator(b.led, b.buzzer)
        # The validator is needed once: unloaded after boot, it leaves its heap to the running device.
        import config

        try:
            board_cfg = config.load_board(self.dir + "/board.json")
            self.cfg = cfg = config.load(self.dir + "/device.json")
            err = None
        except config.ConfigError as e:
            err = str(e)
        del config
        sys.modules.pop("config", None)
        if err:
            await self._config_fault(err)
            return
        b.setup(board_cfg, cfg)
        for unused in ("site", "key"):  # kept by the bridge / parsed into key_bytes: no RAM for them here
            cfg.pop(unused, None)
        self.rig = bool(cfg["test_rig"]) or b.name == "virtual"
        self.dev = cfg["dev"]
        self.topic = "baochay/v1/%s/" % self.dev
        self.signer = Signer(cfg["key_bytes"])
        self.events = EventFactory(self.dev, self.signer, self.counters, self.clock)
        self.outbox = Outbox(self.dir + "/outbox", cfg["outbox_max"])
        self.cp = CallPoint(cfg["hold_cancel_ms"], cfg["cancel_window_s"])
        self.debounce = Debouncer(cfg["debounce_ms"])
        self._register_console()
        self._start_sensing()
        self.console.emit("boot", dev=self.dev, fw=FW_VERSION, board=b.name, boot=boot, reset_cause=b.reset_cause)
        self.indicator.show("idle", ticks_ms())
        b.wdt_start(cfg.get("wdt_ms", 10000))
        if b.reset_cause == "wdt":
            self.raise_event("fault", "watchdog", {"detail": "restarted by the watchdog"})
        self._make_client()
        for held in ("mqtt", "key_bytes"):  # the client and the signer hold what they need of these
            cfg.pop(held, None)
        # Few tasks: each one's frame and its task object live in the heap for the device's life.
        tasks = [self._console_loop(), self._button_loop(), self._sender(), self._housekeeping(), self.mq.run()]
        if self.sensing:
            tasks.append(self.sensing.run())
        if self.outbox.ctrs():
            self._wake.set()
        # Collect after every 16 KB allocated, so the sampled peak stays near the live peak, and
        # note what the loaded code itself takes (in flash on a board with frozen modules or ROMFS).
        gc.collect()
        gc.threshold(16384)
        self.heap_base = gc.mem_alloc()
        await asyncio.gather(*tasks)

    async def _config_fault(self, detail):
        """A broken config: show it and keep answering the console, never crash-loop."""
        self.fault = ("config", detail)
        self.dev = None
        self.indicator.show("fault", ticks_ms())
        self.console.emit("fault", cause="config", detail=detail)
        self.console.register("status", self._cmd_status)
        self.console.register("heap", self._cmd_heap)
        self.console.register("reboot", self._cmd_reboot)
        await asyncio.gather(self._console_loop(), self._fault_blink())

    async def _fault_blink(self):
        while True:
            self.indicator.tick(ticks_ms())
            await asyncio.sleep_ms(50)

    def _start_sensing(self):
        if not self.board.sensors:
            return
        try:
            from sensing import Sensing
        except ImportError:
            return
        try:
            self.sensing = Sensing(self.board, self.cfg, self._sensor_event, ticks_ms)
        except Exception as e:  # a sensor stack that cannot start must not stop the call point
            self.sensing = None
            self.fault = ("sensor", "sensing did not start: %r" % e)
            self.console.emit("fault", cause="sensor", detail=self.fault[1])
            return
        for name, handler in self.sensing.console_commands().items():
            self.console.register(name, handler, rig_only=True)

    def _sensor_event(self, type, cause, data):
        """Sensor transitions as events of one incident: the alarm that confirms a prealarm and the
        restore that ends it refer to the incident's first event; a restore of a fault to the fault."""
        ref = None
        if type in ("prealarm", "alarm"):
            ref = self._incident
        elif type == "restore":
            ref = self._open_faults.pop(cause, None) if cause in self._open_faults else self._incident
        eid = self.raise_event(type, cause, data, ref=ref)
        if type in ("prealarm", "alarm") and self._incident is None:
            self._incident = eid
        elif type == "fault":
            self._open_faults[cause] = eid
        elif type == "restore" and ref == self._incident:
            self._incident = None

    def _make_client(self):
        from mqtt import MQTTClient

        m = self.cfg["mqtt"]
        offline = json.dumps({"v": 1, "state": "offline"}, separators=(",", ":")).encode()
        self.mq = MQTTClient(
            self.dev, m["host"], m["port"], user=m["user"], password=m["password"],
            keepalive=m["keepalive"], clean=False, will=(self.topic + "status", offline, 1, True),
            ssl=m["tls"], cadata=m.get("ca_der"), tls_insecure=m["tls_insecure"],
            server_hostname=m["server_hostname"], on_message=self._on_message, on_state=self._on_mqtt_state,
            on_connect=self._birth, link=self.board,
        )
        self.mq.subscribe(self.topic + "ack", 1)
        self.mq.subscribe(self.topic + "cmd", 1)

    # -- events ---------------------------------------------------------------------------------
    def location(self):
        if self.sensing:
            return self.sensing.location(ticks_ms())
        loc = self.cfg["loc"]
        return {"lat": loc["lat"], "lon": loc["lon"], "acc": loc.get("acc", 15), "src": "fixed", "age": 0}

    def raise_event(self, type, cause, data=None, ref=None):
        """Create, persist and queue one event; returns its id. Flash first, then the network."""
        ctr, eid, frame = self.events.make(type, cause, self.location(), data, ref)
        if not self.outbox.put(ctr, type, frame):
            self._ram.append((ctr, frame))
            self.console.emit("fault", cause="outbox", detail="flash refused the event; sending from RAM")
        frame = None
        self.last_event = eid
        self._wake.set()
        # The event is safe from here on: a heap too fragmented for the console line costs the line.
        try:
            self.console.emit("event", id=eid, type=type, cause=cause)
        except MemoryError:
            self.lowmem += 1
        if type == "alarm" and cause != "button":
            self.cp.raised("alarm", eid)
            self.cp.indicator = "alarm"
            self.cp.alarm_at = ticks_ms()
            self._show()  # the sounder starts before the network is even tried
        return eid

    def _queue(self):
        """Counters of the events the bridge has not stored yet, oldest first."""
        ctrs = self.outbox.ctrs()
        if self._ram:
            ctrs = sorted(ctrs + [c for c, _ in self._ram])
        return ctrs

    def _frame(self, ctr):
        for c, frame in self._ram:
            if c == ctr:
                return frame
        return self.outbox.read(ctr)

    async def _sender(self):
        """Publish the outbox in counter order; resend what the bridge has not stored in time."""
        while True:
            try:
                await self._wake.wait()  # set by a new event, a connect, and by the main loop twice a second
                self._wake.clear()
                await self._send_due()
            except MemoryError:  # (even awaiting a coroutine allocates)
                self._low_memory()  # the events stay in the outbox: tried again on the next wake

    async def _send_due(self):
        now = ticks_ms()
        # One frame in RAM at a time: the outbox may hold many, and the heap is small.
        sent = False
        for ctr in self._queue():
            at = self._sent_at.get(ctr)
            if at is not None and ticks_diff(now, at) < ACK_TIMEOUT_MS:
                continue
            frame = self._frame(ctr)
            if frame is None:
                continue  # stored and removed while an earlier one was being sent
            ok = await self.mq.publish(self.topic + "event", frame, qos=1)
            frame = None
            sent = True
            if ok:
                self._sent_at[ctr] = ticks_ms()
                eid = "%s-%08d" % (self.dev, ctr)
                if at is None:
                    self.console.emit("sent", id=eid)
                    self._progress(eid, "sent")
        if sent:
            # A quiet point: collect now, so what lives on is placed in a compact heap rather
            # than among the garbage of the send (a small heap fails by fragmentation first).
            gc.collect()

    def _low_memory(self):
        """A MemoryError caught by one of the loops: the heap is too fragmented for one request
        now. Collect; the loop goes on and tries again, so the device never stops for it."""
        self.lowmem += 1
        gc.collect()

    def _memory_errors(self):
        return self.lowmem + (self.sensing.lowmem if self.sensing else 0)

    def _progress(self, eid, stage, incident=None):
        if STAGE_RANK.get(stage, 0) > STAGE_RANK.get(self._stage.get(eid, ""), 0):
            self._stage[eid] = stage
            if len(self._stage) > 8:  # bounded: the active alarm's stage is the one shown
                keep = self.cp.alarm_id
                self._stage = {k: v for k, v in self._stage.items() if k == keep or k == eid}
        if self.cp.progress(eid, stage, incident):
            self._show()

    def _on_ack(self, msg):
        eid = msg.get("id")
        stage = msg.get("stage")
        if not isinstance(eid, str) or stage not in STAGE_RANK or not eid.startswith(self.dev + "-"):
            return
        ctr = ctr_of(eid)
        line = {"id": eid, "stage": stage}
        if msg.get("incident"):
            line["incident"] = msg["incident"]
        if msg.get("reason"):
            line["reason"] = msg["reason"]
        self.console.emit("ack", **line)
        if stage != "sent":
            # stored or later: the bridge has it durably, so the flash copy can go
            self.outbox.remove(ctr)
            self._sent_at.pop(ctr, None)
            self._ram = [x for x in self._ram if x[0] != ctr]
        self._progress(eid, stage, msg.get("incident"))
        if len(self._stage) > 32:  # keep memory bounded on a long-running device
            for k in list(self._stage)[:16]:
                self._stage.pop(k, None)

    # -- MQTT callbacks ---------------------------------------------------------------------------
    def _on_message(self, topic, payload, retained):
        msg = read_signed(self.signer, payload)
        if msg is None:
            self.console.emit("rejected", topic=topic, reason="bad signature or format")
            return
        if topic == self.topic + "ack":
            self._on_ack(msg)
        elif topic == self.topic + "cmd":
            self._on_cmd(msg)
        gc.collect()  # a quiet point, as after a send

    def _on_mqtt_state(self, connected, detail):
        if connected == self._mq_up:
            return  # one line per change, not per retry
        self._mq_up = connected
        self.console.emit("mqtt", state="connected" if connected else "down", detail=detail)
        if connected:
            self._wake.set()

    async def _birth(self):
        birth = {"v": 1, "state": "online", "fw": FW_VERSION, "board": self.board.name,
                 "boot": self.clock.boot, "up": self.clock.uptime_ms(), "ts": self.clock.unix()}
        await self.mq.publish(self.topic + "status", json.dumps(birth, separators=(",", ":")).encode(), qos=1, retain=True)

    def _on_cmd(self, msg):
        ctr = msg.get("ctr")
        if not isinstance(ctr, int) or ctr <= self.counters.get("cmd"):
            self.console.emit("rejected", topic="cmd", reason="replayed or unnumbered command")
            return
        self.counters.set("cmd", ctr)
        name = msg.get("cmd")
        args = msg.get("args") or {}
        self.console.emit("cmd", cmd=name)
        if name == "identify":
            self._identify_until = ticks_diff(ticks_ms(), -10000)
            self._show()
        elif name == "silence":
            self.indicator.silence()
        elif name == "self-test":
            asyncio.create_task(self._selftest())
        elif name == "reboot":
            asyncio.create_task(self._reboot())
        elif name == "config":
            for k in REMOTE_CONFIG:
                if isinstance(args.get(k), int) and args[k] >= 0:
                    self.cfg[k] = args[k]
            self.cp.cancel_window_ms = self.cfg["cancel_window_s"] * 1000

    # -- indicator ------------------------------------------------------------------------------
    def _show(self):
        now = ticks_ms()
        state = self.cp.indicator
        if self._identify_until is not None:
            if ticks_diff(self._identify_until, now) > 0:
                state = "identify"
            else:
                self._identify_until = None
        if state == "idle" and self.fault:
            state = "fault"
        if self.indicator.show(state, now):
            self.console.emit("indicator", state=state)

    # -- tasks ----------------------------------------------------------------------------------
    async def _button_loop(self):
        """The main loop: the button, the indicator, and the duties that prove the loop is alive."""
        down_at = ticks_ms()
        while True:
            now = ticks_ms()
            try:
                down_at = self._button_step(now, down_at)
            except MemoryError:
                self._low_memory()
            a = gc.mem_alloc()
            if a > self.heap_peak:
                self.heap_peak = a
            if ticks_diff(now, self._fed) >= 500:
                # The hardware watchdog is fed from here only, so a hung or dead main loop resets
                # the device; the sender is woken too, to resend what the bridge has not stored in time.
                self._fed = now
                self.board.wdt_feed()
                self._wake.set()
            await asyncio.sleep_ms(BUTTON_POLL_MS)

    def _button_step(self, now, down_at):
        cp = self.cp
        edge = self.debounce.sample(self.board.button_pressed(), now)
        if edge == "down":
            down_at = now
            if cp.press(now) == "alarm":
                self._owe_alarm = True  # a flag, not a queue entry: marking it allocates nothing
        elif edge == "up":
            cp.release(now)
        if cp.tick(now) == "cancel":
            self._owe_cancel = True
        if edge or self._owe_alarm or self._owe_cancel or self._identify_until is not None:
            self._show()  # the occupant sees the alarm at once, before its event exists
        if edge == "down":
            self.console.emit("button", state="down")
        elif edge == "up":
            self.console.emit("button", state="up", ms=ticks_diff(now, down_at))
        # Owed until raised: a MemoryError leaves the flag set and the next pass raises the event,
        # once the other tasks have let go of their buffers; a press is never lost to a full heap.
        if self._owe_alarm:
            eid = self.raise_event("alarm", "button", {"press_ms": 0})
            self._owe_alarm = False
            cp.raised("alarm", eid)
            self._show()
        if self._owe_cancel:
            eid = self.raise_event("cancel", "button", {}, ref=cp.alarm_id)
            self._owe_cancel = False
            cp.raised("cancel", eid)
            self._show()
        self.indicator.tick(now)
        return down_at

    async def _housekeeping(self):
        """Keep the network up (Wi-Fi drops and returns), set the clock once it is, and send
        telemetry every telemetry_s seconds (the bridge's supervision heartbeat)."""
        net_at = None
        tele_at = ticks_ms()
        while True:
            now = ticks_ms()
            try:
                if net_at is None or ticks_diff(now, net_at) >= 10000:
                    net_at = now
                    await self._network()
                period = self.cfg["telemetry_s"]
                if period > 0 and ticks_diff(now, tele_at) >= period * 1000:
                    tele_at = now
                    if self.mq.connected:
                        await self._telemetry()
            except MemoryError:
                self._low_memory()
            await asyncio.sleep_ms(500)

    async def _telemetry(self):
        t = {"v": 1, "dev": self.dev, "up": self.clock.uptime_ms(), "ts": self.clock.unix(),
             "boot": self.clock.boot, "heap_free": gc.mem_free(), "heap_peak": self.heap_peak,
             "rssi": self.board.rssi(), "batt": self.sensing.battery() if self.sensing else None,
             "outbox": len(self.outbox), "r": self.sensing.readings() if self.sensing else {}}
        await self.mq.publish(self.topic + "telemetry", json.dumps(t, separators=(",", ":")).encode(), qos=0)

    async def _network(self):
        if not self.board.isconnected():
            await self.board.connect_network(self.cfg.get("wifi"))
        if self.board.isconnected() and not self.clock.synced:
            self.clock.synced = self.board.wall_clock_synced() or self.board.sync_time(self.cfg.get("ntp"))

    async def _console_loop(self):
        reader = self.board.console_reader()
        while True:
            try:
                line = await reader.readline()
                if not line:
                    await asyncio.sleep_ms(100)  # console closed: keep running without it
                    continue
                if len(line) > 1024:
                    self.console.send({"re": None, "ok": False, "error": "line too long"})
                    continue
                self.console.handle(line, rig=self.rig)
            except MemoryError:
                self._low_memory()  # the request is lost, not the device

    async def _selftest(self):
        result = {"indicator": "ok", "outbox": len(self.outbox) if self.dev else None}
        if self.sensing:
            result.update(await self.sensing.selftest())
        passed = all(v not in ("fail", False) for v in result.values())
        result["pass"] = passed
        if self.dev:
            self.raise_event("test", "selftest", result)
        return result

    async def _reboot(self):
        if self.mq and self.mq.connected:
            off = json.dumps({"v": 1, "state": "offline"}, separators=(",", ":")).encode()
            await self.mq.publish(self.topic + "status", off, qos=1, retain=True)
            await self.mq.disconnect()
        await asyncio.sleep_ms(50)
        self.board.reboot()

    # -- console commands ---------------------------------------------------------------------
    def _register_console(self):
        c = self.console
        c.register("status", self._cmd_status)
        c.register("heap", self._cmd_heap)
        c.register("outbox", self._cmd_outbox)
        c.register("indicator", self._cmd_indicator)
        c.register("press", self._cmd_press, rig_only=True)
        c.register("button", self._cmd_button, rig_only=True)
        c.register("net", self._cmd_net, rig_only=True)
        c.register("reboot", self._cmd_reboot)
        c.register("selftest", self._cmd_selftest)
        c.register("hang", self._cmd_hang, rig_only=True)
        c.register("hog", self._cmd_hog, rig_only=True)

    def _cmd_status(self, args):
        out = {"dev": self.dev, "fw": FW_VERSION, "board": self.board.name, "boot": self.clock.boot,
               "up": self.clock.uptime_ms(), "indicator": self.indicator.state,
               "fault": list(self.fault) if self.fault else None,
               "heap_free": gc.mem_free(), "heap_peak": self.heap_peak, "lowmem": self._memory_errors()}
        if self.dev:
            out.update({"mqtt": "connected" if self.mq and self.mq.connected else "connecting",
                        "net": self.board.isconnected(), "outbox": len(self.outbox),
                        "last_event": self.last_event, "sensors": self.board.sensors,
                        "test_rig": self.rig})
        return out

    def _cmd_outbox(self, args):
        return {"ids": ["%s-%08d" % (self.dev, n) for n in self.outbox.ctrs()]}

    def _cmd_indicator(self, args):
        return {"state": self.indicator.state, "stage": self._stage.get(self.cp.alarm_id),
                "event": self.cp.alarm_id, "incident": self.cp.incident}

    def _cmd_button(self, args):
        self.board.set_button(bool(args.get("down")))

    def _cmd_net(self, args):
        self.board.set_network(bool(args.get("up")))

    def _cmd_heap(self, args):
        gc.collect()
        return {"free": gc.mem_free(), "alloc": gc.mem_alloc(), "peak": self.heap_peak,
                "base": self.heap_base, "data_peak": self.heap_peak - self.heap_base,
                "lowmem": self._memory_errors()}

    def _cmd_press(self, args):
        ms = args.get("ms", 100)
        if not isinstance(ms, int) or ms < 0 or ms > 60000:
            raise ValueError("ms must be an integer 0..60000")
        self.board.set_button(True)

        async def release():
            await asyncio.sleep_ms(ms)
            self.board.set_button(False)

        asyncio.create_task(release())

    def _cmd_reboot(self, args):
        asyncio.create_task(self._reboot() if self.mq else self._plain_reboot())

    async def _plain_reboot(self):
        await asyncio.sleep_ms(50)
        self.board.reboot()

    def _cmd_selftest(self, args):
        asyncio.create_task(self._selftest())
        return {"started": True}

    def _cmd_hang(self, args):
        async def spin():
            await asyncio.sleep_ms(50)  # let the reply leave first
            while True:  # the watchdog is expected to end this
                pass

        asyncio.create_task(spin())
        return {"hanging": True}

    def _cmd_hog(self, args):
        """Test rig: take every free byte of the heap for `ms`, as a leak or a burst would, to show
        that the device rides it out and that a press meanwhile is raised once memory returns."""
        ms = args.get("ms", 500)
        if not isinstance(ms, int) or ms < 0 or ms > 60000:
            raise ValueError("ms must be an integer 0..60000")

        async def hold():
            held = []
            end = ticks_add(ticks_ms(), ms)
            while ticks_diff(end, ticks_ms()) > 0:
                for size in (1024, 128, 16):  # and again each pass: what others free is taken too
                    try:
                        while True:
                            held.append(bytearray(size))
                    except MemoryError:
                        pass
                await asyncio.sleep_ms(5)
            held = None  # noqa: F841  # let go before collecting
            gc.collect()

        asyncio.create_task(hold())
        return {"ms": ms, "up": self.clock.uptime_ms()}

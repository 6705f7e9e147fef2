"""The bridge as a real process (`python -m bridge.cli run`), for `make run`, the tests, the HIL suite
and the benchmarks: its config file, its registry, start/stop/kill, and its own CLI against that config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from .procs import ROOT, Process, child_env


def bridge_config(base: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """`base` with `overrides`: a dict value updates that section (e.g. mqtt={"keepalive": 5}), any
    other value replaces it."""
    cfg = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for k, v in overrides.items():
        if isinstance(v, dict):
            cfg.setdefault(k, {}).update(v)
        else:
            cfg[k] = v
    return cfg


def intake_bridge_config(bridge_id: str, db: Path, mqtt: dict[str, Any], intake_url: str, intake_token: str,
                         intake_client: str, **overrides: Any) -> dict[str, Any]:
    """A bridge delivering to the 114 intake at `intake_url` as its client `intake_client`, which holds
    `intake_token`, whose acceptance the devices see as their `accepted` stage (the local system of
    `make run` and the HIL suite)."""
    return bridge_config({
        "bridge_id": bridge_id,
        "db": str(db),
        "mqtt": mqtt,
        "metrics": {"host": "127.0.0.1", "port": 0},
        "sinks": [{"name": "intake114", "type": "intake-json", "url": intake_url, "token": intake_token,
                   "client": intake_client}],
        "accepted_from": "intake114",
    }, **overrides)


class Bridge:
    """One bridge process on `config` (a bridge.yaml as a dict; its `db` is the registry and store).
    The config and the log are `<name>.yaml` and `<name>.log` in `workdir`. `extra_path`: where the
    bridge finds the modules of test or benchmark sinks (`sink_types`)."""

    def __init__(self, workdir: Path, config: dict[str, Any], *, name: str = "bridge",
                 extra_path: Sequence[str | Path] = ()):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.db = Path(config["db"])
        self.cfg_path = self.workdir / f"{name}.yaml"
        self.log_path = self.workdir / f"{name}.log"
        self.env = child_env(extra_path)
        # 0600 from its creation: it holds the broker password and the intake token
        fd = os.open(self.cfg_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(yaml.safe_dump(config, allow_unicode=True))
        self.process = Process([sys.executable, "-m", "bridge.cli", "run", "--config", str(self.cfg_path)],
                               name=name, log=self.log_path, ready="bridge ready", env=self.env)

    @property
    def pid(self) -> int:
        return self.process.pid

    def register(self, devices: Iterable[dict[str, Any]], board: str | None = None) -> None:
        """Put each device (its firmware config dict) in the registry, as the installer's `register`
        does; `board` names the boards.yaml entry when it is not the config's own."""
        from provisioning.boards import get_board
        from provisioning.register import registry_record, upsert_registry

        for cfg in devices:
            name = board or cfg.get("board") or "virtual"
            upsert_registry(self.db, registry_record({**cfg, "board": name}, get_board(name), {}))

    def start(self, timeout: float = 30.0) -> Bridge:
        self.process.start(timeout)
        return self

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (a graceful shutdown) and its exit code; None when it had to be killed."""
        return self.process.stop(timeout)

    def kill(self) -> None:
        """SIGKILL: no clean shutdown."""
        self.process.kill()

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """`baochay-bridge ARGS --config <this bridge's config>`, its output as text."""
        return subprocess.run([sys.executable, "-m", "bridge.cli", *args, "--config", str(self.cfg_path)],
                              cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=30)

    def status(self) -> dict[str, Any]:
        """`baochay-bridge status --json`: devices, open alarms, sink backlogs, faults."""
        r = self.cli("status", "--json")
        if r.returncode:
            raise RuntimeError(f"bridge status failed: {r.stderr.strip()}")
        return json.loads(r.stdout)

"""scripts/check_architecture.py catches each rule it claims to, so `make lint` cannot pass by not looking."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "check_architecture.py"
spec = importlib.util.spec_from_file_location("check_architecture", SCRIPT)
assert spec and spec.loader
arch = importlib.util.module_from_spec(spec)
sys.modules["check_architecture"] = arch  # dataclasses look their module up while the class is built
spec.loader.exec_module(arch)

PREFIX = "/".join(("baochay", "v1"))  # joined, or this file would break the rule it tests

# A small tree that keeps every rule; each case below breaks one of them.
CLEAN = {
    "firmware/protocol.py": f'PREFIX = "{PREFIX}/"\n\ndef topic(dev, kind):\n    return PREFIX + dev + "/" + kind\n',
    "firmware/board/__init__.py": (
        "import sys\n\ndef create():\n    if sys.platform == 'esp32':\n        from board.esp32 import Board\n"
        "    else:\n        from board.virtual import Board\n    return Board()\n"),
    "firmware/board/esp32.py": "import machine\nimport network\nimport esp32\nimport neopixel\n",
    "firmware/board/virtual.py": "from board import virtual_sensors\n\nclass Board:\n    name = 'virtual'\n",
    "firmware/board/virtual_sensors.py": "def read(b):\n    return b.virtual_sensors\n",
    "firmware/app.py": (
        '"""Uses ' + PREFIX + '/<dev>/event through protocol; a docstring may say so."""\n'
        "import board\nimport protocol\nfrom board import esp32_pins\n\n"
        "def run(b):\n    if b.name == 'esp32-devkitc':\n        pass\n"
        "    return protocol.topic('d', 'event'), b.kind == 'virtual'\n"),
    "bridge/stages/parse.py": "import json\nimport hmac\nfrom firmware import protocol\n",
    "bridge/ingest.py": "import paho.mqtt.client\nimport sqlite3\n",
    "tests/test_x.py": "from firmware.protocol import topic\n\nT = topic('d', 'event')\n",
    # outside the tree the check reads
    ".venv/lib/machine_user.py": f"import machine\nT = '{PREFIX}/x'\n",
    "build/gen.py": "import network\n",
    "var/x.py": "import esp32\n",
    "results/y.py": "import neopixel\n",
}

CASES = [
    # rule, path, source, line
    ("hardware-outside-board", "firmware/app.py", "import machine\n", 1),
    ("hardware-outside-board", "firmware/drivers/gps.py", "x = 1\nfrom machine import UART\n", 2),
    ("hardware-outside-board", "bridge/x.py", "import network.wlan as w\n", 1),
    ("hardware-outside-board", "tests/core/test_y.py", "import esp32\n", 1),
    ("hardware-outside-board", "stack/z.py", "import importlib\nnp = importlib.import_module('neopixel')\n", 2),
    ("topic-prefix", "bridge/ingest.py", f"TOPICS = ['{PREFIX}/+/event']\n", 1),
    ("topic-prefix", "tests/test_t.py", f"def test():\n    assert t == f'{PREFIX}/{{dev}}/event'\n", 2),
    ("topic-prefix", "stack/m.py", f"ACL = b'topic read {PREFIX}/#'\n", 1),
    ("topic-prefix", "firmware/board/virtual.py", f"T = '{PREFIX}/'\n", 1),
    ("impure-stage", "bridge/stages/store.py", "import sqlite3\n", 1),
    ("impure-stage", "bridge/stages/deliver.py", "from urllib.request import urlopen\n", 1),
    ("impure-stage", "bridge/stages/ack.py", "import paho.mqtt.client as mqtt\n", 1),
    ("impure-stage", "bridge/stages/enrich.py", "from http import client\n", 1),
    ("impure-stage", "bridge/stages/verify.py", "import http.client\n", 1),
    ("impure-stage", "bridge/stages/auth.py", "import requests\n", 1),
    ("impure-stage", "bridge/stages/parse.py", "def f():\n    import socket\n", 2),
    ("core-asks-virtual", "firmware/app.py", "rig = cfg['rig'] or b.name == 'virtual'\n", 1),
    ("core-asks-virtual", "firmware/sensing.py", "if 'virtual' != self.board.name:\n    pass\n", 1),
    ("core-asks-virtual", "firmware/app.py", "x = b.name in ('esp32', 'virtual')\n", 1),
    ("core-asks-virtual", "firmware/sensing.py", "s = board.virtual_sensors\n", 1),
    ("core-asks-virtual", "firmware/detect/smoke.py", "ok = hasattr(b, 'virtual_sensors')\n", 1),
    ("core-imports-virtual-board", "firmware/app.py", "from board import virtual\n", 1),
    ("core-imports-virtual-board", "firmware/app.py", "import board.virtual_sensors as vs\n", 1),
    ("core-imports-virtual-board", "firmware/sensing.py", "from board.virtual import Board\n", 1),
    ("core-imports-virtual-board", "firmware/rig.py", "from firmware.board import virtual_sensors\n", 1),
    ("core-imports-virtual-board", "firmware/detect/heat.py", "from ..board import virtual\n", 1),
    ("unparsable", "bridge/broken.py", "def f(:\n", 1),
]


def make_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_clean_tree_passes(tmp_path, capsys):
    root = make_tree(tmp_path, CLEAN)
    found, count = arch.check(root)
    assert found == []
    assert count == 9  # the excluded folders are not read
    assert arch.main([str(root)]) == 0
    assert capsys.readouterr().out.strip() == f"architecture: {len(arch.RULES)} rules, 0 violations in 9 files"


@pytest.mark.parametrize("rule, rel, source, line", CASES, ids=[f"{c[0]}:{c[1]}:{c[3]}" for c in CASES])
def test_each_violation_is_caught(tmp_path, capsys, rule, rel, source, line):
    root = make_tree(tmp_path, {**CLEAN, rel: source})
    found, _ = arch.check(root)
    assert [(v.path, v.line, v.rule) for v in found] == [(rel, line, rule)]
    assert arch.main([str(root)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{rel}:{line}: {rule}: ")
    assert any(o.startswith(f"mend {rule}: ") for o in out)
    assert out[-1].startswith(f"architecture: {len(arch.RULES)} rules, 1 violations in ")


def test_every_rule_has_a_case():
    assert {r.name for r in arch.RULES} <= {c[0] for c in CASES}


def test_one_import_one_violation(tmp_path):
    root = make_tree(tmp_path, {"firmware/app.py": "from machine import Pin, UART\nfrom board.virtual import Board\n"})
    found, _ = arch.check(root)
    assert [(v.line, v.rule) for v in found] == [(1, "hardware-outside-board"), (2, "core-imports-virtual-board")]


def test_board_name_compared_with_other_boards_is_fine(tmp_path):
    root = make_tree(tmp_path, {"firmware/app.py": "a = b.name == 'esp32-devkitc'\nc = b.kind == 'virtual'\n"})
    assert arch.check(root)[0] == []


def test_command_line_exit_code_and_output(tmp_path):
    root = make_tree(tmp_path, {**CLEAN, "bridge/stages/store.py": "import sqlite3\n"})
    run = subprocess.run([sys.executable, str(SCRIPT), str(root)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "bridge/stages/store.py:1: impure-stage: imports sqlite3"
    assert lines[-1] == f"architecture: {len(arch.RULES)} rules, 1 violations in 10 files"

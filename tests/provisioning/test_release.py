"""baochay-provision release: the key an operator keeps, the bundle built from the firmware tree, and the
check the bridge makes of it, through the installer's own command."""

import io
import os
import subprocess
import tarfile
from datetime import datetime, timezone

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from prov_helpers import micropython

from bridge.ota.bundle import fingerprint, load_private_key, load_public_key, read_bundle
from provisioning.boards import load_boards
from provisioning.cli import main
from provisioning.errors import ProvisionError
from provisioning.image import FIRMWARE_DIR, HOST_ONLY, compile_mpy
from provisioning.release import build_release

CHIP_BOARDS = sorted(n for n, b in load_boards().items() if not b.is_virtual)
VIRTUAL_BOARDS = sorted(n for n, b in load_boards().items() if b.is_virtual)
# 2026-12-03T16:50:00Z
EPOCH = str(int(datetime(2026, 12, 3, 16, 50, tzinfo=timezone.utc).timestamp()))


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    assert main(["release", "keygen", "--out", str(d)]) == 0
    return d / "release.key", d / "release.pub"


@pytest.fixture(scope="module")
def built(tmp_path_factory, keys):
    """One chip bundle (the default boards) and one for virtual boards."""
    out = tmp_path_factory.mktemp("release")
    key = str(keys[0])
    assert main(["release", "build", "--key", key, "--version", "0.2.0", "--security-version", "2",
                 "--out", str(out / "chip")]) == 0
    assert main(["release", "build", "--key", key, "--version", "0.3.1", "--security-version", "3",
                 "--boards", "virtual,virtual-panic", "--out", str(out / "virtual")]) == 0
    pub = load_public_key(keys[1])
    paths = out / "chip" / "baochay-0.2.0.bcb", out / "virtual" / "baochay-0.3.1.bcb"
    return read_bundle(paths[0], pub), read_bundle(paths[1], pub), paths


def run_app_version(tmp_path, parts) -> str:
    """What the real MicroPython says the bundle's application is: its modules in a directory,
    `app` imported from them, App.FW_VERSION printed."""
    d = tmp_path / "mp"
    for path, data in parts:
        (d / path).parent.mkdir(parents=True, exist_ok=True)
        (d / path).write_bytes(data)
    out = subprocess.run([micropython(), "-c", f"import sys; sys.path.insert(0, {str(d)!r}); import app; "
                          "print(app.App.FW_VERSION)"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


# -- keygen ---------------------------------------------------------------------------------------


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path, capsys):
    old = os.umask(0)  # even with nothing masked, the private key is never readable by others
    try:
        code, out, _ = run(capsys, "release", "keygen", "--out", str(tmp_path / "k"))
    finally:
        os.umask(old)
    assert code == 0
    key, pub = tmp_path / "k" / "release.key", tmp_path / "k" / "release.pub"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert oct(pub.stat().st_mode & 0o777) == "0o644"
    public = load_public_key(pub)
    assert fingerprint(load_private_key(key).public_key()) == fingerprint(public)
    assert str(key) in out and str(pub) in out and fingerprint(public) in out
    assert "ota.release_key" in out and "offline" in out
    assert b"PRIVATE KEY" not in pub.read_bytes()


def test_keygen_never_replaces_a_key_without_force(tmp_path, capsys):
    d = tmp_path / "k"
    assert run(capsys, "release", "keygen", "--out", str(d))[0] == 0
    key = d / "release.key"
    first = key.read_bytes()
    code, out, err = run(capsys, "release", "keygen", "--out", str(d))
    assert code == 1
    assert (f"error: {key} exists; a new release key would orphan every device's trust in bundles signed "
            "with the old one; remove it first if you mean it") in err
    assert key.read_bytes() == first and "Traceback" not in err
    # a public key alone may be the half of a key kept elsewhere: not overwritten either
    key.unlink()
    assert run(capsys, "release", "keygen", "--out", str(d))[0] == 1
    assert not key.exists()

    assert run(capsys, "release", "keygen", "--out", str(d), "--force")[0] == 0
    assert key.read_bytes() != first and oct(key.stat().st_mode & 0o777) == "0o600"
    assert fingerprint(load_private_key(key).public_key()) == fingerprint(load_public_key(d / "release.pub"))
    assert sorted(p.name for p in d.iterdir()) == ["release.key", "release.pub"]


# -- build ----------------------------------------------------------------------------------------


def test_a_chip_bundle_is_accepted_with_release_pub_and_leaves_the_host_modules_out(built):
    chip, _, _ = built
    assert (chip.version, chip.security_version, chip.min_base) == ("0.2.0", 2, "1.24.0")
    assert chip.boards == CHIP_BOARDS  # the default: every chip board of boards.yaml
    paths = [p for p, _ in chip.parts]
    assert paths == sorted(paths) and all(p.endswith(".mpy") and not p.startswith("/") for p in paths)
    assert {"app.mpy", "board/esp32.mpy", "detect/smoke.mpy", "commands.mpy"} <= set(paths)
    assert "board/virtual.mpy" not in paths
    assert not {h[:-3] + ".mpy" for h in HOST_ONLY} & set(paths)
    # what stays on the device through every update is not in it
    assert not {"main.mpy", "boot.mpy", "slots.mpy", "main.py", "boot.py"} & set(paths)
    parts = dict(chip.parts)
    assert all(data[:2] == b"M\x06" for data in parts.values())  # .mpy of MicroPython 1.29
    # every module is the tree's, compiled as an image compiles it; app.py with the release's version
    assert parts["commands.mpy"] == compile_mpy(FIRMWARE_DIR / "commands.py", "commands.py")
    assert parts["board/esp32.mpy"] == compile_mpy(FIRMWARE_DIR / "board" / "esp32.py", "board/esp32.py")
    assert parts["app.mpy"] != compile_mpy(FIRMWARE_DIR / "app.py", "app.py")


def test_the_bundles_application_says_the_version_given(built, tmp_path):
    chip, virtual, _ = built
    assert run_app_version(tmp_path / "chip", chip.parts) == "0.2.0"
    assert run_app_version(tmp_path / "virtual", virtual.parts) == "0.3.1"


def test_a_virtual_bundle_carries_the_virtual_board(built):
    _, virtual, _ = built
    assert virtual.boards == ["virtual", "virtual-panic"]
    paths = {p for p, _ in virtual.parts}
    assert {h[:-3] + ".mpy" for h in HOST_ONLY} <= paths
    assert "board/virtual.mpy" in paths and "slots.mpy" not in paths


def test_build_prints_a_summary_and_is_reproducible_with_source_date_epoch(tmp_path, keys, capsys, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    args = ["release", "build", "--key", str(keys[0]), "--version", "1.0.12", "--security-version", "7",
            "--boards", "virtual-panic,virtual", "--min-base", "1.29.0"]
    code, out, err = run(capsys, *args, "--out", str(tmp_path / "a"))
    assert code == 0, err
    path = tmp_path / "a" / "baochay-1.0.12.bcb"
    b = read_bundle(path, load_public_key(keys[1]))
    for text in (str(path), "1.0.12", "security version  7", "virtual, virtual-panic", str(len(b.parts)),
                 f"{b.size:,} bytes", b.sha256):
        assert text in out, text
    assert "compile" in err  # progress goes to stderr, the summary to stdout
    assert b.manifest["created"] == "2026-12-03T16:50:00Z" and b.min_base == "1.29.0"
    assert run(capsys, *args, "--out", str(tmp_path / "b"))[0] == 0
    assert (tmp_path / "b" / "baochay-1.0.12.bcb").read_bytes() == path.read_bytes()
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["baochay-1.0.12.bcb"]  # nothing half-written


def test_build_writes_to_build_release_by_default(tmp_path, keys, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "release", "build", "--key", str(keys[0]), "--version", "0.2.0",
                       "--security-version", "0", "--boards", "virtual")
    assert code == 0, err
    assert (tmp_path / "build" / "release" / "baochay-0.2.0.bcb").is_file()


def test_one_bundle_is_for_virtual_boards_or_chips_not_both(tmp_path, keys, capsys):
    code, _, err = run(capsys, "release", "build", "--key", str(keys[0]), "--version", "0.2.0",
                       "--security-version", "2", "--boards", "virtual,esp32-devkitc", "--out", str(tmp_path))
    assert code == 1
    assert "error: one bundle is for virtual boards or for chips, not both: " in err
    assert "virtual" in err and "esp32-devkitc" in err
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_board_is_refused_by_name(tmp_path, keys, capsys):
    code, _, err = run(capsys, "release", "build", "--key", str(keys[0]), "--version", "0.2.0",
                       "--security-version", "2", "--boards", "virtual,esp32-nope", "--out", str(tmp_path))
    assert code == 1 and "error: unknown board 'esp32-nope'; known boards: " in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag, value", [("--version", "0.2"), ("--version", "v0.2.0"), ("--version", "0.2.0.1"),
                                         ("--security-version", "-1"), ("--security-version", "two"),
                                         ("--security-version", "70000"), ("--min-base", "1.24")])
def test_a_bad_version_is_refused_before_anything_is_built(tmp_path, keys, capsys, flag, value):
    args = {"--version": "0.2.0", "--security-version": "2", flag: value}
    with pytest.raises(SystemExit) as e:
        main(["release", "build", "--key", str(keys[0]), "--out", str(tmp_path), "--boards", "virtual",
              *(x for kv in args.items() for x in kv)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {flag}" in err and repr(value) in err
    assert list(tmp_path.iterdir()) == []


def test_a_key_of_another_type_is_refused_by_path(tmp_path, capsys):
    r = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    key = tmp_path / "rsa.key"
    key.write_bytes(r.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    for k in (key, tmp_path / "missing.key"):
        code, _, err = run(capsys, "release", "build", "--key", str(k), "--version", "0.2.0",
                           "--security-version", "2", "--boards", "virtual", "--out", str(tmp_path / "out"))
        assert code == 1 and err.strip().startswith("error: ") and str(k) in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_an_app_without_exactly_one_version_line_is_refused(tmp_path, keys):
    fw = tmp_path / "fw"
    fw.mkdir()
    (fw / "commands.py").write_text("X = 1\n")
    with pytest.raises(ProvisionError, match="app.py is missing"):
        build_release(keys[0], "0.2.0", 2, ["virtual"], firmware_dir=fw, out_dir=tmp_path / "out")
    (fw / "app.py").write_text("X = 1\n")
    with pytest.raises(ProvisionError, match="exactly one line"):
        build_release(keys[0], "0.2.0", 2, ["virtual"], firmware_dir=fw, out_dir=tmp_path / "out")
    (fw / "app.py").write_text('class App:\n    FW_VERSION = "0.1.0"\n    OLD = 1\n    FW_VERSION = "0.0.9"\n')
    with pytest.raises(ProvisionError, match="found 2"):
        build_release(keys[0], "0.2.0", 2, ["virtual"], firmware_dir=fw, out_dir=tmp_path / "out")
    (fw / "app.py").write_text('class App:\n    FW_VERSION = "0.1.0"  # the tree\'s\n')
    r = build_release(keys[0], "0.2.0", 2, ["virtual"], firmware_dir=fw, out_dir=tmp_path / "out")
    assert [p for p, _ in r.bundle.parts] == ["app.mpy", "commands.mpy"]
    assert run_app_version(tmp_path, r.bundle.parts) == "0.2.0"


# -- verify ---------------------------------------------------------------------------------------


def test_verify_accepts_a_good_bundle_and_names_why_it_refuses_one(built, keys, tmp_path, capsys):
    chip, _, (path, _) = built
    code, out, _ = run(capsys, "release", "verify", str(path), "--pub", str(keys[1]))
    assert code == 0 and "0.2.0" in out and chip.sha256 in out and "2" in out

    other = tmp_path / "other"
    assert run(capsys, "release", "keygen", "--out", str(other))[0] == 0
    code, out, err = run(capsys, "release", "verify", str(path), "--pub", str(other / "release.pub"))
    assert code == 1 and "error: bundle refused: bad-signature: " in err and out == ""

    tampered = tmp_path / "t.bcb"
    tampered.write_bytes(_with_payload_byte_flipped(path.read_bytes()))
    code, _, err = run(capsys, "release", "verify", str(tampered), "--pub", str(keys[1]))
    assert code == 1 and "error: bundle refused: bad-hash: " in err

    code, _, err = run(capsys, "release", "verify", str(tmp_path / "none.bcb"), "--pub", str(keys[1]))
    assert code == 1 and "error: bundle refused: not-a-bundle: " in err

    # the private key where the public one belongs: said so, not taken
    code, _, err = run(capsys, "release", "verify", str(path), "--pub", str(keys[0]))
    assert code == 1 and "private key" in err and "Traceback" not in err


def _with_payload_byte_flipped(data):
    """The same bundle with one byte of payload.bin changed; manifest and signature as they were."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]
    payload = bytearray(members[2][1])
    payload[len(payload) // 2] ^= 1
    members[2] = ("payload.bin", bytes(payload))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, body in members:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
    return buf.getvalue()

# TLS settings of the device config, the CA certificate file formats, and the client's refusal to connect
# unchecked. Runs under CPython and MicroPython.
import asyncio
import json

import config
from mqtt import MQTTClient, tls_context
from util import TempDir, raises

# A self-signed EC P-256 CA certificate made for this test with
# `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -days 36500 -subj /CN=core-test-ca`.
CA_PEM = (
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBhTCCASugAwIBAgIUQ+k++wtN6W4T3Sf2bSkmCS/O4wowCgYIKoZIzj0EAwIw\n"
    "FzEVMBMGA1UEAwwMY29yZS10ZXN0LWNhMCAXDTI2MTEyOTIwMDI0N1oYDzIxMjYx\n"
    "MTA1MjAwMjQ3WjAXMRUwEwYDVQQDDAxjb3JlLXRlc3QtY2EwWTATBgcqhkjOPQIB\n"
    "BggqhkjOPQMBBwNCAASZlPHCiJgDFeBvgEd7D/Z9rt9KFZX5+EKozcKr4el8fyRL\n"
    "inCDpSH9tver8iGq6VI7mk9pvyTe+QsxH94XmOxOo1MwUTAdBgNVHQ4EFgQU51ej\n"
    "snyWTFmBUYOblzOOX5RbCC8wHwYDVR0jBBgwFoAU51ejsnyWTFmBUYOblzOOX5Rb\n"
    "CC8wDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiBc/nuje4scrhfA\n"
    "mDWBUtfSHPjHM/18aZGUKd+c4M72fgIhAI1dMsf/JTIaalB6vP2t62q4TTJJtTAF\n"
    "OcEjMzVbtUQM\n"
    "-----END CERTIFICATE-----\n"
)


def _cfg(**mqtt):
    m = {"host": "127.0.0.1", "port": 8883}
    m.update(mqtt)
    return {"dev": "hn-a-0001", "key": "ab" * 32, "board": "virtual", "mqtt": m, "loc": {"lat": 21.0, "lon": 105.8}}


def test_tls_keys_default_to_plain_mqtt():
    m = config.validate(_cfg())["mqtt"]
    assert m["tls"] is False and m["ca"] is None and m["server_hostname"] is None and m["tls_insecure"] is False


def test_tls_keys_are_checked_with_clear_messages():
    def error(**mqtt):
        try:
            config.validate(_cfg(**mqtt))
        except config.ConfigError as e:
            return str(e)
        return None

    assert "'tls' must be bool" in error(tls="yes")
    assert "'ca' must be a non-empty string" in error(tls=True, ca="")
    assert "'server_hostname' must be a non-empty string" in error(tls=True, ca="ca.der", server_hostname=5)
    assert "need 'tls': true" in error(ca="ca.der")
    assert "need 'tls': true" in error(tls_insecure=True)
    assert "not both" in error(tls=True, ca="ca.der", tls_insecure=True)
    assert error(tls=True, ca="ca.der", server_hostname="mqtt.example.vn") is None
    assert error(tls=True) is None  # accepted: the client refuses to connect and says why


def test_ca_file_is_read_as_der_from_pem_or_der():
    der = config.der_of(CA_PEM.encode())
    assert der[0] == 0x30 and len(der) > 300
    assert config.der_of(der) == der
    assert config.der_of(CA_PEM.replace("\n", "\r\n").encode()) == der
    assert raises(ValueError, config.der_of, b"hello, not a certificate")


def test_load_reads_the_named_ca_file_beside_device_json():
    with TempDir() as d:
        with open(d + "/device.json", "w") as f:
            json.dump(_cfg(tls=True, ca="ca.pem"), f)
        try:
            config.load(d + "/device.json")
            missing = None
        except config.ConfigError as e:
            missing = str(e)
        assert missing is not None and "ca.pem: not found" in missing
        with open(d + "/ca.pem", "w") as f:
            f.write(CA_PEM)
        assert config.load(d + "/device.json")["mqtt"]["ca_der"] == config.der_of(CA_PEM.encode())
        with open(d + "/ca.pem", "w") as f:
            f.write("garbage")
        assert raises(config.ConfigError, config.load, d + "/device.json")


def test_the_ca_loads_into_a_verifying_context():
    ctx = tls_context(config.der_of(CA_PEM.encode()))
    assert ctx.verify_mode == 2  # ssl.CERT_REQUIRED on both interpreters
    assert tls_context(None, insecure=True).verify_mode == 0
    assert raises(ValueError, tls_context, None)


async def test_client_without_a_ca_refuses_before_connecting():
    states = []
    c = MQTTClient("hn-a-0001", "127.0.0.1", 1, ssl=True, backoff_min_ms=50, backoff_max_ms=50,
                   on_state=lambda up, detail: states.append((up, detail)))
    task = asyncio.create_task(c.run())
    while not states:
        await asyncio.sleep(0.01)
    await c.disconnect()
    await task
    assert states[0][0] is False and states[0][1].startswith("tls: no CA certificate")
    assert c.stats["connects"] == 0


def test_the_clock_floor_is_a_non_negative_unix_time():
    assert config.validate(_cfg())["clock_floor"] == 0  # an image built before the floor: none
    assert config.validate(dict(_cfg(), clock_floor=1796227200))["clock_floor"] == 1796227200
    for bad, words in ((-1, "'clock_floor' must not be negative"), ("2026-12-01", "'clock_floor' must be int"),
                       (True, "'clock_floor' must be int")):
        try:
            config.validate(dict(_cfg(), clock_floor=bad))
        except config.ConfigError as e:
            assert words in str(e), str(e)
        else:
            raise AssertionError("accepted %r" % (bad,))

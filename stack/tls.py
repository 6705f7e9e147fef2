"""Throwaway certificates for local runs and tests: a private CA and a server certificate for loopback.

Made with the `openssl` command (EC P-256, valid for a few days), never for production: the CA key sits
in the same directory, unprotected. The server certificate names 127.0.0.1 and localhost in its subject
alternative names, so clients that check the host name (CPython, mbedTLS on MicroPython) accept it.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


class OpensslMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class LoopbackPKI:
    ca_cert: Path  # PEM
    ca_key: Path
    server_cert: Path  # PEM, signed by ca_cert
    server_key: Path

    def ca_der(self) -> bytes:
        return pem_to_der(self.ca_cert.read_text())


def pem_to_der(pem: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem)


def _openssl(directory: Path, *args: str) -> None:
    exe = shutil.which("openssl")
    if not exe:
        raise OpensslMissing("the openssl command is needed to make test certificates (apt-get install openssl)")
    subprocess.run([exe, *args], cwd=directory, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str = "ca", cn: str = "baochay-test-ca", days: int = 3) -> tuple[Path, Path]:
    """A self-signed CA certificate and key: (<name>.crt, <name>.key) in `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(directory, "req", "-x509", *_EC, "-keyout", key.name, "-out", cert.name, "-days", str(days),
             "-subj", f"/CN={cn}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return cert, key


def make_server_cert(directory: Path, ca_cert: Path, ca_key: Path, name: str = "server",
                     hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), days: int = 3) -> tuple[Path, Path]:
    """A server certificate signed by the CA, naming `hosts` (IP addresses and DNS names) as its SANs."""
    directory = Path(directory)
    cert, key, csr, ext = (directory / f"{name}{s}" for s in (".crt", ".key", ".csr", ".ext"))
    sans = ",".join(("IP:" if _is_ip(h) else "DNS:") + h for h in hosts)
    ext.write_text(f"subjectAltName={sans}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    _openssl(directory, "req", *_EC, "-keyout", key.name, "-out", csr.name, "-subj", f"/CN={hosts[0]}")
    _openssl(directory, "x509", "-req", "-in", csr.name, "-CA", str(ca_cert), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", cert.name, "-days", str(days), "-extfile", ext.name)
    key.chmod(0o644)  # Mosquitto may drop to its own user (when started as root) and must read its key
    return cert, key


def make_test_pki(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> LoopbackPKI:
    """A CA and a loopback server certificate it signed, in `directory`."""
    ca_cert, ca_key = make_ca(directory)
    cert, key = make_server_cert(directory, ca_cert, ca_key, hosts=hosts)
    return LoopbackPKI(ca_cert, ca_key, cert, key)


def _is_ip(host: str) -> bool:
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)

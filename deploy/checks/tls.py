"""The scheduler speaks mutual TLS only: probed from this machine, as a client would connect.

Three probes: a TLS client with the site CA but no certificate must be
refused (by a TLS alert, or the connection closed on the first read); a
plain TCP client must get no reply that is not TLS; a client with the
site's certificate must complete the handshake and hear the scheduler.
"""

from __future__ import annotations

import socket
import ssl

from deploy.checks.results import CheckResult
from deploy.inventory import Site
from deploy.state import connection_path, read_connection

PROBE_TIMEOUT_SECONDS = 3.0
#: What a plain client sends: the start of a dask frame, never a valid TLS record.
PLAIN_PROBE = b"\x01" + b"\x00" * 15
_CLOSED = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError, BrokenPipeError)

Verdict = tuple[bool, str]


def _context(ca: str, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca)
    if cert and key:
        context.load_cert_chain(cert, key)
    return context


def _handshake(context: ssl.SSLContext, address: str, port: int) -> tuple[bytes, str]:
    """Handshake and read the first byte the server sends (a dask server speaks first); (byte, TLS version)."""
    with socket.create_connection((address, port), timeout=PROBE_TIMEOUT_SECONDS) as raw:
        with context.wrap_socket(raw, server_hostname=address) as tls:
            return tls.recv(1), tls.version() or "TLS"


def _attempt(context: ssl.SSLContext, address: str, port: int) -> tuple[str, str]:
    """One TLS handshake, classified: (outcome, detail).

    Outcomes: ``answered`` (detail: the TLS version), ``closed``, ``alert``
    and ``not-tls`` (detail: the reason), ``timeout``, ``failed`` (detail: why).
    """
    try:
        reply, version = _handshake(context, address, port)
    except ssl.SSLCertVerificationError as exc:
        return "failed", f"its certificate is not the site's: {exc.verify_message}"
    except _CLOSED:
        return "closed", ""
    except ssl.SSLError as exc:
        reason = (exc.reason or str(exc)).lower()
        return ("alert" if "alert" in reason else "not-tls"), reason
    except TimeoutError:
        return "timeout", ""
    except OSError as exc:
        return "failed", f"cannot connect: {exc.strerror or exc}"
    return ("answered", version) if reply else ("closed", "")


def refuses_without_client_cert(address: str, port: int, ca: str) -> Verdict:
    """A TLS client with the site CA but no certificate of its own must be refused."""
    try:
        context = _context(ca)
    except OSError as exc:
        return False, f"cannot read the site's CA: {exc.strerror or exc}"
    outcome, detail = _attempt(context, address, port)
    return {
        "answered": (False, "accepted a client without a certificate and answered it"),
        "closed": (True, "refused: connection closed"),
        "alert": (True, f"refused: {detail}"),
        "not-tls": (False, f"does not speak TLS: {detail}"),
        "timeout": (False, f"accepted a client without a certificate (not refused within {PROBE_TIMEOUT_SECONDS:.0f} s)"),
        "failed": (False, detail),
    }[outcome]


def refuses_plain_tcp(address: str, port: int) -> Verdict:
    """A plain TCP client must get no reply, or only a TLS alert."""
    try:
        with socket.create_connection((address, port), timeout=PROBE_TIMEOUT_SECONDS) as raw:
            raw.sendall(PLAIN_PROBE)
            reply = raw.recv(64)
    except (ConnectionResetError, BrokenPipeError):
        return True, "refused: connection reset"
    except TimeoutError:
        return True, f"no reply within {PROBE_TIMEOUT_SECONDS:.0f} s"
    except OSError as exc:
        return False, f"cannot connect: {exc.strerror or exc}"
    if not reply:
        return True, "refused: connection closed"
    if reply[0] == 0x15:  # a TLS alert record
        return True, "refused with a TLS alert"
    return False, f"a plain connection got a reply that is not TLS ({len(reply)} bytes)"


def accepts_site_client(address: str, port: int, ca: str, cert: str, key: str) -> Verdict:
    """A client with the site's certificate must be accepted and hear the scheduler."""
    try:
        context = _context(ca, cert, key)
    except OSError as exc:
        return False, f"cannot read the site's client certificate: {exc.strerror or exc}"
    outcome, detail = _attempt(context, address, port)
    return {
        "answered": (True, f"{detail}, the scheduler answered"),
        "closed": (False, "refused: connection closed"),
        "alert": (False, f"refused: {detail}"),
        "not-tls": (False, f"TLS failed: {detail}"),
        "timeout": (False, f"no reply within {PROBE_TIMEOUT_SECONDS:.0f} s"),
        "failed": (False, detail),
    }[outcome]


def tls_checks(host: str, address: str, port: int, ca: str, cert: str, key: str) -> list[CheckResult]:
    """The three probes against *address*:*port*, as results of *host*'s scheduler role."""
    return [
        CheckResult(host, "scheduler", "tls: no client cert refused", *refuses_without_client_cert(address, port, ca)),
        CheckResult(host, "scheduler", "tls: plain tcp refused", *refuses_plain_tcp(address, port)),
        CheckResult(host, "scheduler", "tls: site client cert accepted", *accepts_site_client(address, port, ca, cert, key)),
    ]


def endpoint(address: str) -> tuple[str, int]:
    """``tls://host:port`` (IPv6 in brackets) as (host, port)."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


def scheduler_tls_checks(site: Site) -> list[CheckResult]:
    """The probes against the scheduler named in the site's connection record."""
    host = site.scheduler_host.name
    record = read_connection(site.state_dir)
    if record is None:
        where = connection_path(site.state_dir)
        return [CheckResult(host, "scheduler", "tls", False, f"no connection record at {where}; the site is not up")]
    address, port = endpoint(record["scheduler"])
    paths = record["tls"]
    return tls_checks(host, address, port, paths["ca"], paths["cert"], paths["key"])

"""Who answers a stranger? Probes of one listening socket without credentials, and their verdict.

Each probe connects as anyone on the network could: saying nothing, a
plain HTTP GET, a Redis PING, a PostgreSQL startup (plain, and inside TLS
after an SSLRequest), a TLS handshake without a client certificate (then
nothing, HTTP and PING inside it) and, on an SSH server, a login with no
credentials. A socket is *exposed* when any probe gets an answer that is
not a refusal: data it did not ask for, an HTTP page, a PONG, a database
session without a password. :data:`LISTING_SCRIPT` lists a host's sockets
and :func:`listener_check` probes the site's own: from this machine, or on a
site reached through ssh from its gateway host (:class:`SshForwards`), as a
stranger on the site's own network would.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import struct
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from deploy.checks.results import CheckResult

PROBE_TIMEOUT_SECONDS = 2.0
#: How long a probe that says nothing waits for a server that speaks first (or refuses us) at once.
SILENCE_SECONDS = 0.5

#: How many of a server's own redirects the HTTP probe follows.
MAX_REDIRECTS = 4
REDIS_PING = b"PING\r\n"
#: PostgreSQL's SSLRequest, and a protocol 3.0 startup as user toppipe.
PG_SSL_REQUEST = struct.pack("!II", 8, 80877103)
_PG_PARAMS = b"user\x00toppipe\x00database\x00toppipe\x00\x00"
PG_STARTUP = struct.pack("!II", 8 + len(_PG_PARAMS), 196608) + _PG_PARAMS

_CLOSED = (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError, ssl.SSLZeroReturnError)
_HTTP_REFUSALS = {"401", "403", "407"}


@dataclass(frozen=True)
class Answer:
    """What one probe got: refused or not, and why in a few words."""

    probe: str
    exposed: bool
    detail: str


#: One probe: (connect, address, port, timeout) -> its answer.
Probe = Callable[..., Answer]


@dataclass(frozen=True)
class Exposure:
    """Every probe's answer from one address and port."""

    address: str
    port: int
    answers: tuple[Answer, ...]

    @property
    def exposed(self) -> bool:
        return any(a.exposed for a in self.answers)

    @property
    def protection(self) -> str:
        """What refused the probes: ``exposed``, ``ssh key``, ``ssh password``, ``password``,
        ``mutual TLS``, or '' when nothing answered that shows which credential it wants."""
        if self.exposed:
            return "exposed"
        details = [a.detail for a in self.answers]
        if any(d == "asks for publickey" for d in details):
            return "ssh key"
        if any(d.startswith("asks for ") and a.probe == "ssh" for a, d in zip(self.answers, details)):
            return "ssh password"
        if any(phrase in d for d in details for phrase in ("asks for a password", "asks for the password", "asks for credentials")):
            return "password"
        if any(a.probe == "tls" and "alert" in a.detail for a in self.answers):
            return "mutual TLS"
        return ""

    def describe(self) -> str:
        shown = [a for a in self.answers if a.exposed] or list(self.answers)
        return "; ".join(f"{a.probe}: {a.detail}" for a in shown)


def judge_reply(reply: bytes | None) -> tuple[bool, str]:
    """(exposed, why) for what a server sent a client without credentials (None: nothing in time)."""
    if reply is None:
        return False, "no reply"
    if not reply:
        return False, "closed without a reply"
    first_line = reply.split(b"\r\n", 1)[0].split(b"\n", 1)[0][:80].decode("ascii", "replace")
    if reply[0] == 0x15:
        return False, "refused with a TLS alert"
    if reply.startswith(b"SSH-"):
        return False, f"an SSH server ({first_line}); see the ssh probe"
    if reply.startswith(b"HTTP/"):
        parts = first_line.split()
        if len(parts) > 1 and parts[1] in _HTTP_REFUSALS:
            return False, f"asks for credentials ({first_line})"
        return True, f"answered HTTP without credentials ({first_line})"
    if reply.startswith((b"-NOAUTH", b"-DENIED", b"-WRONGPASS")):
        return False, f"asks for the password ({first_line})"
    if _postgres_error(reply):
        return False, f"refused: {_postgres_error(reply)}"
    if reply[:1] == b"R" and len(reply) >= 9:
        method = struct.unpack("!I", reply[5:9])[0]
        if method == 0:
            return True, "a PostgreSQL session without a password (AuthenticationOk)"
        return False, f"asks for a password (PostgreSQL authentication method {method})"
    return True, f"answered {len(reply)} bytes without credentials: {reply[:32]!r}"


def _postgres_error(reply: bytes) -> str:
    """The message of a PostgreSQL ErrorResponse, or '' when *reply* is not one."""
    if reply[:1] != b"E" or len(reply) < 6 or reply[5:6] not in (b"S", b"V"):
        return ""
    fields = dict((f[:1], f[1:]) for f in reply[5:].split(b"\x00") if f)
    return fields.get(b"M", b"PostgreSQL error").decode("utf-8", "replace")


def _read(sock: socket.socket, timeout: float) -> bytes | None:
    """The first reply (up to 512 bytes), b'' when closed or refused by TLS, None when nothing came in time."""
    sock.settimeout(timeout)
    try:
        return sock.recv(512)
    except TimeoutError:
        return None
    except _CLOSED:
        return b""
    except ssl.SSLError as exc:
        if "alert" in (exc.reason or str(exc)).lower():
            return b"\x15"  # the server refused us with an alert after the handshake
        raise


def _tls_context() -> ssl.SSLContext:
    """A client with no certificate that accepts any server's: a stranger, not the site."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


#: Opens a TCP connection to (address, port) within a timeout: from here, or from a site host.
Connect = Callable[[str, int, float], socket.socket]


def direct(address: str, port: int, timeout: float) -> socket.socket:
    """A connection from this machine."""
    return socket.create_connection((address, port), timeout=timeout)


class SshForwards:
    """Connections made by a site host (ssh's ``-W`` stdio forward over its master connection), as
    real sockets (one end of a socket pair) so that TLS and paramiko work on them unchanged.

    A closed site's hosts are probed this way from its gateway: a stranger on the site's own
    network, where this machine cannot go. :meth:`close` ends every forward still running.
    """

    def __init__(self, argv: Callable[[str, int], list[str]]):
        self._argv = argv
        self._procs: list[subprocess.Popen] = []

    def __call__(self, address: str, port: int, timeout: float) -> socket.socket:
        ours, theirs = socket.socketpair()
        with theirs:
            proc = subprocess.Popen(self._argv(address, port), stdin=theirs, stdout=theirs, stderr=subprocess.DEVNULL)
        self._procs.append(proc)
        ours.settimeout(timeout)
        return ours

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self._procs.clear()


def _exchange(connect: Connect, address: str, port: int, timeout: float, payload: bytes, over_tls: bool, wait: float | None = None) -> bytes | None | Answer:
    """Send *payload* (maybe nothing), plainly or inside TLS, and read the reply; an Answer when TLS refused us."""
    with connect(address, port, timeout) as raw:
        sock = raw
        if over_tls:
            try:
                sock = _tls_context().wrap_socket(raw)
            except _CLOSED:
                return Answer("", False, "TLS handshake refused: closed")
            except ssl.SSLError as exc:
                return Answer("", False, f"TLS handshake refused: {(exc.reason or str(exc)).lower()}")
            except TimeoutError:
                return Answer("", False, "no TLS handshake")
        with sock:
            if payload:
                sock.sendall(payload)
            return _read(sock, wait or timeout)


def _judged(reply: bytes | None | Answer, over_tls: bool) -> Answer:
    if isinstance(reply, Answer):
        return reply
    exposed, why = judge_reply(reply)
    return Answer("", exposed, f"handshake done without a client certificate, then {why}" if over_tls else why)


def _sent(payload: bytes, over_tls: bool = False, wait: float | None = None) -> Probe:
    def probe(connect: Connect, address: str, port: int, timeout: float) -> Answer:
        return _judged(_exchange(connect, address, port, timeout, payload, over_tls, wait), over_tls)

    return probe


def _location(reply: bytes) -> str:
    """Where an HTTP redirect points, or ''."""
    head = reply.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = head[0].split()
    if not head[0].startswith("HTTP/") or len(status) < 2 or not status[1].startswith("3"):
        return ""
    return next((v.strip() for n, _, v in (line.partition(":") for line in head[1:]) if n.strip().lower() == "location"), "")


def _http(over_tls: bool = False) -> Probe:
    """A GET of /, following the server's own redirects: a login page is a refusal (Jupyter's token)."""

    def probe(connect: Connect, address: str, port: int, timeout: float) -> Answer:
        path = "/"
        for _ in range(MAX_REDIRECTS):
            host = f"[{address.split('%')[0]}]" if ":" in address else address
            request = f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode()
            reply = _exchange(connect, address, port, timeout, request, over_tls)
            location = _location(reply) if isinstance(reply, bytes) else ""
            if not location.startswith("/") or location.startswith("//"):
                return _judged(reply, over_tls)
            if "login" in location.split("?", 1)[0]:
                return Answer("", False, f"asks for a password (redirects to {location.split('?', 1)[0]})")
            path = location
        return _judged(reply, over_tls)

    return probe


def _postgres_tls(connect: Connect, address: str, port: int, timeout: float) -> Answer:
    with connect(address, port, timeout) as raw:
        raw.sendall(PG_SSL_REQUEST)
        reply = _read(raw, timeout)
        if reply != b"S":
            exposed, why = judge_reply(reply) if reply != b"N" else (False, "no TLS offered")
            return Answer("", exposed, why)
        try:
            sock = _tls_context().wrap_socket(raw)
        except (ssl.SSLError, *_CLOSED) as exc:
            return Answer("", False, f"TLS refused: {exc}")
        with sock:
            sock.sendall(PG_STARTUP)
            return Answer("", *judge_reply(_read(sock, timeout)))


def _ssh(connect: Connect, address: str, port: int, timeout: float) -> Answer:
    """An SSH login with no credentials at all (the "none" method), and the methods it offers."""
    import paramiko

    with connect(address, port, timeout) as sock:
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=timeout)
            transport.auth_none("probe")
        except paramiko.BadAuthenticationType as exc:
            return Answer("", False, f"asks for {', '.join(exc.allowed_types)}")
        except (paramiko.SSHException, EOFError, OSError) as exc:
            return Answer("", False, f"no login: {exc or type(exc).__name__}")
        finally:
            transport.close()
        return Answer("", True, "logged in without credentials")


PROBES: dict[str, Probe] = {
    "silence": _sent(b"", wait=SILENCE_SECONDS),
    "http": _http(),
    "redis": _sent(REDIS_PING),
    "postgres": _sent(PG_STARTUP),
    "postgres+tls": _postgres_tls,
    "tls": _sent(b"", over_tls=True, wait=SILENCE_SECONDS),
    "tls+http": _http(over_tls=True),
    "tls+redis": _sent(REDIS_PING, over_tls=True),
}


def probe(address: str, port: int, timeout: float = PROBE_TIMEOUT_SECONDS, connect: Connect = direct) -> Exposure:
    """Every probe against *address*:*port*, each on its own connection (made by *connect*)."""
    answers = [_attempt(name, run, connect, address, port, timeout) for name, run in PROBES.items()]
    if any("an SSH server" in a.detail for a in answers):  # its banner may come after the silence probe's wait
        answers.append(_attempt("ssh", _ssh, connect, address, port, timeout))
    return Exposure(address, port, tuple(answers))


def _attempt(name: str, run: Probe, connect: Connect, address: str, port: int, timeout: float) -> Answer:
    try:
        answer = run(connect, address, port, timeout)
    except _CLOSED:
        return Answer(name, False, "closed without a reply")
    except ssl.SSLError as exc:
        return Answer(name, False, f"refused by TLS: {(exc.reason or str(exc)).lower()}")
    except TimeoutError:
        return Answer(name, False, "no reply")
    except OSError as exc:
        return Answer(name, False, f"cannot connect: {exc.strerror or exc}")
    return Answer(name, answer.exposed, answer.detail)


# -- listing the sockets ------------------------------------------------------

#: The listening TCP sockets (``ss -Hltnp``), then ``PID SERVICE`` for each of their processes
#: that carries a service marker (``TOPPIPE_SERVICE=<site>/<service>``).
LISTING_SCRIPT = (
    "out=$(ss -Hltnp) || exit 3; printf '%s\\n' \"$out\"; echo '--- markers'; "
    "for p in $(printf '%s\\n' \"$out\" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do "
    "m=$(tr '\\0' '\\n' < /proc/$p/environ 2>/dev/null | grep '^TOPPIPE_SERVICE=' || true); "
    '[ -n "$m" ] && echo "$p ${m#TOPPIPE_SERVICE=}"; done; true'
)


@dataclass(frozen=True)
class Listener:
    """One listening TCP socket: its address as bound, its processes and their services."""

    address: str  # 0.0.0.0, ::, *, 10.0.0.5, 127.0.0.1 ...
    port: int
    processes: tuple[tuple[str, int], ...] = ()  # (name, pid)
    services: tuple[str, ...] = ()  # <site>/<service> of the processes that carry a marker

    @property
    def loopback(self) -> bool:
        try:
            ip = ipaddress.ip_address(self.address)
        except ValueError:
            return False
        mapped = getattr(ip, "ipv4_mapped", None)
        return (mapped or ip).is_loopback

    @property
    def wildcard(self) -> bool:
        return self.address in ("*", "0.0.0.0", "::")

    def describe(self) -> str:
        address = f"[{self.address}]" if ":" in self.address else self.address
        processes = ", ".join(f"{name} pid {pid}" for name, pid in self.processes) or "no process shown"
        services = f" [{', '.join(self.services)}]" if self.services else ""
        return f"{address}:{self.port} ({processes}){services}"


_PROCESS = re.compile(r'\("([^"]+)",pid=(\d+)')


def parse_ss(text: str, markers: dict[int, str] | None = None) -> list[Listener]:
    """The listening sockets in ``ss -Hltnp`` output, with the services of *markers* (pid -> service)."""
    markers = markers or {}
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[0] != "LISTEN":
            continue
        host, _, port = fields[3].rpartition(":")
        host = host.strip("[]").split("%", 1)[0]
        processes = tuple((name, int(pid)) for name, pid in _PROCESS.findall(line))
        services = tuple(sorted({markers[pid] for _, pid in processes if pid in markers}))
        found.append(Listener(host, int(port), processes, services))
    return found


def parse_listing(output: str) -> list[Listener]:
    """The listeners in :data:`LISTING_SCRIPT`'s output."""
    sockets, _, marks = output.partition("--- markers")
    markers = {}
    for line in marks.splitlines():
        pid, _, service = line.strip().partition(" ")
        if pid.isdigit() and service:
            markers[int(pid)] = service
    return parse_ss(sockets, markers)


# -- the check ----------------------------------------------------------------

CHECK = "listeners"


def site_listeners(listeners: list[Listener], site: str, ports: set[int]) -> list[Listener]:
    """The site's sockets beyond loopback: its services' (by marker) and those on its services' ports."""
    return [
        l for l in listeners
        if not l.loopback and (l.port in ports or any(s.startswith(f"{site}/") for s in l.services))
    ]  # fmt: skip


def judge_listeners(host: str, probed: list[tuple[Listener, Exposure]]) -> CheckResult:
    """Passed when every probed socket refused with a credential it wants; else the first that did not."""
    bad = [(l, e) for l, e in probed if not e.protection or e.exposed]
    if bad:
        listener, exposure = bad[0]
        what = "answers without credentials" if exposure.exposed else "shows no credential it wants"
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        return CheckResult(host, "site", CHECK, False, f"{listener.describe()} {what}: {exposure.describe()}{more}")
    if not probed:
        return CheckResult(host, "site", CHECK, True, "none of the site's beyond loopback")
    kinds: dict[str, int] = {}
    for _, exposure in probed:
        kinds[exposure.protection] = kinds.get(exposure.protection, 0) + 1
    return CheckResult(host, "site", CHECK, True, ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())))


def listener_check(host: str, address: str, section, site: str, ports: set[int], connect: Connect = direct) -> CheckResult:
    """The site's listeners on *host* (:data:`LISTING_SCRIPT`'s *section*), each probed over *connect*."""
    if not section.ok:
        last = section.output.strip().splitlines()[-1:] or ["no output"]
        return CheckResult(host, "site", CHECK, False, f"cannot list listening sockets (ss of iproute2): {last[0]}")
    targets = site_listeners(parse_listing(section.output), site, ports)
    with ThreadPoolExecutor(max(1, min(8, len(targets)))) as pool:
        found = list(pool.map(lambda l: probe(address if l.wildcard else l.address, l.port, connect=connect), targets))
    return judge_listeners(host, list(zip(targets, found)))

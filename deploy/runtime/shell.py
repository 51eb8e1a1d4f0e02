"""Bash pieces shared by the runtimes (native, apptainer).

Each function returns a fragment of bash as a string; none runs anything.
"""

from __future__ import annotations

import shlex

STOP_GRACE_SECONDS = 10


def q(text: str) -> str:
    """*text* quoted for bash."""
    return shlex.quote(text)


def marked_pids(pattern: str, fixed: bool) -> str:
    """Bash that prints the pids whose environment holds ``TOPPIPE_SERVICE=<pattern>`` (not the script's own)."""
    flag = "-lzxF" if fixed else "-lzxE"
    return f"grep {flag} {q('TOPPIPE_SERVICE=' + pattern)} /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 | grep -vx $$"


def kill_marked(pattern: str, fixed: bool) -> str:
    """Bash that stops every process whose environment matches *pattern*."""
    return f"""
pids=$({marked_pids(pattern, fixed)} || true)
if [ -n "$pids" ]; then
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 1 {STOP_GRACE_SECONDS * 10}); do
    alive=""; for p in $pids; do [ -d /proc/$p ] && alive="$alive $p"; done
    [ -z "$alive" ] && break; sleep 0.1
  done
  [ -n "$alive" ] && kill -KILL $alive 2>/dev/null || true
fi"""


def probe_list(ports: tuple[tuple[str, int], ...]) -> str:
    """The ``ADDR:PORT`` words the probes below loop over."""
    return " ".join(f"{q(addr)}:{port}" for addr, port in ports)


def probe_ports(probes: str) -> str:
    """Bash that appends ``port:ADDR:PORT=open|closed`` to ``$out`` for each of *probes*."""
    return f"""for hp in {probes}; do
  if timeout 2 bash -c "exec 3<>/dev/tcp/${{hp%:*}}/${{hp##*:}}" 2>/dev/null; then
    out="$out port:$hp=open"; else out="$out port:$hp=closed"; fi
done"""


def all_ports_answer(probes: str) -> str:
    """Bash that sets ``ready=1`` when every one of *probes* accepts a connection, else ``ready=0``."""
    return f"""ready=1
  for hp in {probes}; do
    timeout 2 bash -c "exec 3<>/dev/tcp/${{hp%:*}}/${{hp##*:}}" 2>/dev/null || ready=0
  done"""


def wait_until_ready(
    name: str, probes: str, timeout: float, on_exit: str = "", each_step: str = "", guard: str = "", on_timeout: str = ""
) -> str:
    """Bash that waits for the started ``$pid`` until all *probes* answer.

    Fails with the log's tail if the process exits first (after *on_exit*),
    or when *timeout* passes (after *on_timeout*, which stops what started:
    a failed start leaves nothing running). *each_step* runs every round;
    *guard* (a bash test followed by ``&&``) must also hold before the
    service counts as up.
    """
    steps = int(timeout * 5)
    return f"""for step in $(seq 1 {steps}); do
  if ! kill -0 "$pid" 2>/dev/null; then
    {on_exit + "; " if on_exit else ""}echo "{name} exited while starting; last lines of $log:" >&2; tail -n 15 "$log" >&2; exit 1
  fi{chr(10) + each_step if each_step else ""}
  {all_ports_answer(probes)}
  if {guard}[ "$ready" = 1 ] && [ -n "{probes}" ]; then
    sleep 0.3; kill -0 "$pid" 2>/dev/null && exit 0  # still alive once its ports answer
  fi
  {guard}[ -z "{probes}" ] && [ "$step" -ge 5 ] && exit 0
  sleep 0.2
done
{on_timeout}
echo "{name} did not answer on {probes or 'its ports'} within {timeout:.0f} s, so it was stopped; last lines of $log:" >&2
tail -n 15 "$log" >&2
exit 1
"""

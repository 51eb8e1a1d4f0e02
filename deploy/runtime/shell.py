"""Bash pieces shared by the runtimes (native, apptainer).

Each function returns a fragment of bash as a string; none runs anything.
"""

from __future__ import annotations

import shlex

from deploy.resources import ServiceSpec

#: Seconds a service's processes get between SIGTERM and SIGKILL (``ServiceSpec.stop_grace``), and a site sweep's.
STOP_GRACE_SECONDS = 10


def q(text: str) -> str:
    """*text* quoted for bash."""
    return shlex.quote(text)


def marked_pids(pattern: str, fixed: bool) -> str:
    """Bash that prints the pids whose environment holds ``TOPPIPE_SERVICE=<pattern>`` (not the script's own)."""
    flag = "-lzxF" if fixed else "-lzxE"
    return f"grep {flag} {q('TOPPIPE_SERVICE=' + pattern)} /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 | grep -vx $$"


def kill_marked(pattern: str, fixed: bool, grace: float = STOP_GRACE_SECONDS) -> str:
    """Bash that stops every process whose environment matches *pattern*: SIGTERM, then
    SIGKILL to those still alive after *grace* seconds."""
    return f"""
pids=$({marked_pids(pattern, fixed)} || true)
if [ -n "$pids" ]; then
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 1 {max(1, round(grace * 10))}); do
    alive=""; for p in $pids; do  # a zombie has ended: its reaper (the host's init) may take a second
      st=$(cat /proc/$p/stat 2>/dev/null) || continue; st=${{st##*) }}; [ "${{st%% *}}" = Z ] || alive="$alive $p"
    done
    [ -z "$alive" ] && break; sleep 0.1
  done
  [ -n "$alive" ] && kill -KILL $alive 2>/dev/null || true
fi"""


#: A service's log is moved aside to ``log.1`` (the one before is dropped) when it starts past this size.
LOG_LIMIT_BYTES = 20 * 1024 * 1024


def open_log(limit: int = LOG_LIMIT_BYTES) -> str:
    """Bash setting ``$log`` to ``$d/log``, rotated first when over *limit* bytes, private.

    So a service's logs take at most twice *limit* plus what one run writes.
    """
    return (
        'log="$d/log"\n'
        f'if [ -f "$log" ] && [ "$(stat -c %s "$log")" -gt {limit} ]; then mv -f "$log" "$log.1"; fi\n'
        'touch "$log"; chmod 600 "$log"'
    )


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
    service counts as up; one without ports must have been up for five rounds
    past *guard* (about a second), so that a failure at start is seen.
    """
    steps = int(timeout * 5)
    return f"""settled=0  # rounds a service without ports has been seen alive (and past *guard*)
for step in $(seq 1 {steps}); do
  if ! kill -0 "$pid" 2>/dev/null; then
    {on_exit + "; " if on_exit else ""}echo "{name} exited while starting; last lines of $log:" >&2; tail -n 15 "$log" >&2; exit 1
  fi{chr(10) + each_step if each_step else ""}
  {all_ports_answer(probes)}
  if {guard}[ "$ready" = 1 ] && [ -n "{probes}" ]; then
    sleep 0.3; kill -0 "$pid" 2>/dev/null && exit 0  # still alive once its ports answer
  fi
  if [ -z "{probes}" ]; then
    {guard}settled=$((settled + 1)); [ "$settled" -ge 5 ] && exit 0
  fi
  sleep 0.2
done
{on_timeout}
echo "{name} did not answer on {probes or 'its ports'} within {timeout:.0f} s, so it was stopped; last lines of $log:" >&2
tail -n 15 "$log" >&2
exit 1
"""


#: The delimiter of the here-document that carries a launch script.
_LAUNCH_END = "TOPPIPE_LAUNCH_END"


def _last_line(var: str) -> str:
    """Bash: the last non-blank line of ``$var``."""
    return f"""$(printf '%s\\n' "${var}" | grep -v '^[[:space:]]*$' | tail -n 1)"""


def _kept_definition(spec: ServiceSpec, launch: str) -> str:
    """Bash defining ``write_next`` (the launch script to ``$d/next.sh``), ``keep_next`` (make it
    the kept definition in ``$d/good``, with copies of ``spec.files``) and ``restore_files``."""
    save = "\n".join(f'  [ -f {q(p)} ] && cp -p {q(p)} "$d/good.new/files/{i}"' for i, p in enumerate(spec.files))
    back = "\n".join(f'  [ -f "$d/good/files/{i}" ] && cp -p "$d/good/files/{i}" {q(p)}' for i, p in enumerate(spec.files))
    return f"""d={q(spec.rundir)}
mkdir -p "$d" && chmod 700 "$d"
write_next() {{
cat > "$d/next.sh" <<'{_LAUNCH_END}'
{launch}
{_LAUNCH_END}
}}
keep_next() {{  # the definition that just started is the one to fall back on from now
  rm -rf "$d/good.new" && mkdir -p "$d/good.new/files" && mv "$d/next.sh" "$d/good.new/start.sh"
{save or '  :'}
  echo {q(spec.digest())} > "$d/good.new/digest" && rm -rf "$d/good" && mv "$d/good.new" "$d/good"
}}
restore_files() {{  # the configuration files the kept definition started with
  [ -f "$d/good/digest" ] || return 0
{back or '  :'}
  return 0
}}"""


def keep_running(spec: ServiceSpec, launch: str) -> str:
    """Bash that records the running definition (*launch*, the script that started it) as the kept one."""
    return f"set -u\numask 077\n{_kept_definition(spec, launch)}\nwrite_next\nkeep_next\n"


def guarded_start(spec: ServiceSpec, launch: str, check: str) -> str:
    """Bash that replaces a service's running definition with *launch* only when it can start.

    1. *check* (empty: none) runs first, beside what runs; if it fails, nothing
       is stopped, the kept configuration files are put back, and the script
       prints a ``REFUSED:`` line (exit 0: the host's other actions go on).
       With nothing running there is nothing to protect: the service starts
       without it (a first ``up`` would wait for it, on the scheduler's path),
       and must itself refuse a definition it cannot start with, in one line.
    2. *launch* stops the old and starts the new; if it fails and a kept
       definition other than this one exists, its files are put back and it is
       started again: ``REFUSED:`` when that works, exit 1 when not.
    3. The definition that started becomes the kept one.
    Without a kept definition a failure is an ordinary one (exit 1, the reason on stderr).
    """
    name = spec.name
    running = f"[ -n \"$({marked_pids(spec.marker, fixed=True)} || true)\" ]"
    checking = ""
    if check:
        checking = f"""if {running} && ! why=$( ( {check} ) </dev/null 2>&1 ); then
  reason="{_last_line('why')}"
  restore_files
  echo "REFUSED: the new definition failed its check (${{reason:-no output}}); the running {name} was left as it is"
  exit 0
fi
"""
    return f"""set -u
umask 077
{_kept_definition(spec, launch)}
{checking}write_next
if err=$(bash "$d/next.sh" 2>&1 >/dev/null); then keep_next; exit 0; fi
first=$(printf '%s\\n' "$err" | head -n 1)  # what happened; then the log's last line, not its start banner
last=$(printf '%s\\n' "$err" | sed 1d | grep -v -e '^[[:space:]]*$' -e '^--- ' | tail -n 1)
reason="${{first%%;*}}${{last:+: $last}}"
if [ -f "$d/good/start.sh" ] && [ "$(cat "$d/good/digest" 2>/dev/null)" != {q(spec.digest())} ]; then
  restore_files
  if back=$(bash "$d/good/start.sh" 2>&1 >/dev/null); then
    echo "REFUSED: the new definition did not start ($reason); the previous definition of {name} was started again"
    exit 0
  fi
  echo "{name}: the new definition did not start ($reason), nor did the previous one: {_last_line('back')}" >&2; exit 1
fi
printf '%s\\n' "$err" >&2; exit 1
"""

# shellcheck shell=bash
# One host at a time, for tests of host failures (`lab stop HOST`,
# `lab start HOST`; `up` starts stopped hosts again instead of rebuilding).
#
# `stop HOST` ends a host as a crash or a power cut would: its PID 1 is
# killed (every process in it dies, as with `down`), its veth removed, and
# $LAB_STATE/hosts/HOST/stopped marks it. Nobody tells Slurm. `start HOST`
# boots it again like a rebooted machine: same overlay upper layer (its
# files survive), same seed (address, host keys, munge key), then sshd and
# munged (init.sh) and its Slurm daemon; `up` does the same for every host
# so stopped (lab_stopped_hosts).
stop_one() {
    local h=$1 pid i
    [ -d "$LAB_STATE/hosts/$h" ] || die "the lab is not up"
    touch "$LAB_STATE/hosts/$h/stopped"
    pid=$(host_pid1 "$h") || { log "$h was not running"; return 0; }
    kill -KILL "$pid"
    for i in $(seq 100); do
        [ -z "$(marked_pids "TOPPIPE_LAB_HOST=$h")" ] && break
        sleep 0.1
    done
    [ -z "$(marked_pids "TOPPIPE_LAB_HOST=$h")" ] \
        || die "processes of $h still running: $(marked_pids "TOPPIPE_LAB_HOST=$h" | xargs)"
    ip link del "$LAB_VETH_PREFIX$h" 2>/dev/null || true
}

start_one() {
    local h=$1 base appt
    if host_pid1 "$h" >/dev/null; then log "$h is already running"; return 0; fi
    [ -e "$LAB_JSON" ] && ip link show "$LAB_BRIDGE" >/dev/null 2>&1 \
        || die "the lab is not up: run 'scripts/lab up'"
    # the trees this lab was started from, even if lab.d changed since
    read -r base appt 2>/dev/null <"$LAB_STATE/trees" || { base=$(base_dir); appt=$(apptainer_dir); }
    [ -e "$base/ok" ] && [ -e "$appt/ok" ] || die "$base or $appt is gone: run 'scripts/lab down' and 'up'"
    bridge_up
    start_host "$h" "$base" "$appt"
    wait_until 20 "sshd on $h" sshd_answers "$h"
    [ "$(ssh_lab "$h" hostname)" = "$h" ] || die "ssh $LAB_USER@$h failed"
    rm -f "$LAB_STATE/hosts/$h/stopped"
    if [ "$h" = "$LAB_SLURM_CTLD" ] || [[ " ${LAB_SLURM_NODES[*]} " == *" $h "* ]]; then
        start_slurm_again
    fi
}

# After a start: slurmctld if its host was started, then slurmd on every
# running node that lacks one (it needs the controller for its config); wait
# until the controller hears from each (a node may still run a job it knew).
start_slurm_again() {
    local n t0 running=()
    host_pid1 "$LAB_SLURM_CTLD" >/dev/null || { log "$LAB_SLURM_CTLD is stopped: Slurm waits for it"; return 0; }
    host_exec "$LAB_SLURM_CTLD" pgrep -x slurmctld >/dev/null || start_slurmctld
    for n in "${LAB_SLURM_NODES[@]}"; do
        host_pid1 "$n" >/dev/null || continue
        running+=("$n")
        host_exec "$n" pgrep -x slurmd >/dev/null && continue
        t0=$(host_exec "$LAB_SLURM_CTLD" date +%s)
        start_slurmd "$n"
        wait_until 30 "slurmd on $n registered" slurmd_started_since "$n" "$t0"
    done
    [ ${#running[@]} -eq 0 ] || wait_until 30 "Slurm nodes answering" \
        slurm_nodes_in 'idle|alloc|mix|comp' "${running[@]}"
}

# The controller has heard from NODE's slurmd started at or after EPOCH
# (before that, it may still show the node as it was before the stop).
slurmd_started_since() {
    local started
    started=$(host_exec "$LAB_SLURM_CTLD" scontrol -o show node "$1" | grep -o 'SlurmdStartTime=[^ ]*')
    [ "$(host_exec "$LAB_SLURM_CTLD" date -d "${started#*=}" +%s)" -ge "$2" ]
}

# Prints the hosts that `stop` stopped when they are all that keeps the lab
# from being up (every other host runs and answers); fails otherwise.
lab_stopped_hosts() {
    local h stopped=()
    [ -e "$LAB_JSON" ] && ip link show "$LAB_BRIDGE" >/dev/null 2>&1 || return 1
    for h in "${LAB_HOSTS[@]}"; do
        if host_pid1 "$h" >/dev/null; then
            sshd_answers "$h" || return 1
        elif [ -e "$LAB_STATE/hosts/$h/stopped" ]; then
            stopped+=("$h")
        else
            return 1
        fi
    done
    [ ${#stopped[@]} -gt 0 ] && echo "${stopped[*]}"
}

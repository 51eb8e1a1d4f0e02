# shellcheck shell=bash
# Host lifecycle: the bridge, starting hosts (boot.sh in new namespaces) and
# wiring their veths, starting Slurm in order, status, and teardown.
# Stopping and starting one host: restart.sh.

# A fixed MAC address per IP address (02: locally administered), for the
# bridge and each host's eth0: a host started again, or the bridge losing the
# port whose address it had borrowed, must not leave stale ARP entries behind.
lab_mac() { local IFS=.; set -- $1; printf '02:00:%02x:%02x:%02x:%02x' "$@"; }

bridge_up() {
    ip link show "$LAB_BRIDGE" >/dev/null 2>&1 || ip link add "$LAB_BRIDGE" type bridge
    ip link set "$LAB_BRIDGE" address "$(lab_mac "$LAB_GATEWAY")"
    ip addr replace "$LAB_GATEWAY/24" dev "$LAB_BRIDGE"
    ip link set "$LAB_BRIDGE" up
}

start_host() {  # start_host HOST BASE [APPTAINER_DIR]
    local h=$1 base=$2 appt=${3:-$(apptainer_dir)} d=$LAB_STATE/hosts/$1 pid1="" i
    mkdir -p "$d/upper" "$d/work" "$d/root"
    # setsid + closed fds: the host outlives this script and holds none of
    # its pipes or locks (its own, fd 9, and any a caller's `flock` passed on)
    (close_inherited_fds; exec setsid env -i PATH="$PATH" TOPPIPE_LAB_HOST="$h" LAB_HOST="$h" \
        LAB_LOWER="$base/rootfs" LAB_UPPER="$d/upper" LAB_WORK="$d/work" LAB_ROOT="$d/root" \
        LAB_SEED="$d/seed" LAB_SHARED="$LAB_SHARED" LAB_SHARED_SOURCE="$LAB_SHARED_SOURCE" LAB_APPTAINER_DIR="$appt" \
        LAB_REPO="$base/repo" LAB_REPO_IN_HOST="$LAB_REPO_IN_HOST" \
        unshare --net --mount --uts --ipc --pid --fork --propagation private \
        /bin/bash "$LAB_DIR/boot.sh" </dev/null >"$d/boot.log" 2>&1) &
    for i in $(seq 100); do
        pid1=$(host_pid1 "$h") && break
        sleep 0.05
    done
    [ -n "$pid1" ] || { cat "$d/boot.log" >&2; die "host $h did not start"; }
    # its network: a veth whose inner end is born in the host as eth0
    ip link del "$LAB_VETH_PREFIX$h" 2>/dev/null || true
    ip link add "$LAB_VETH_PREFIX$h" type veth \
        peer name "$LAB_IFACE" address "$(lab_mac "${LAB_ADDR[$h]}")" netns "$pid1"
    ip link set "$LAB_VETH_PREFIX$h" master "$LAB_BRIDGE" up
    nsenter -t "$pid1" -n ip addr add "${LAB_ADDR[$h]}/24" dev "$LAB_IFACE"
    nsenter -t "$pid1" -n ip link set "$LAB_IFACE" up
}

# sshd of host $1 answers on its address, tried from inside the host: the
# desktop may not reach it (access.sh)
sshd_answers() {
    local pid; pid=$(host_pid1 "$1") || return 1
    nsenter -t "$pid" -n timeout 1 bash -c "exec 3<>/dev/tcp/${LAB_ADDR[$1]}/22" 2>/dev/null
}

wait_until() {  # wait_until SECONDS WHAT CMD...: poll every 0.1 s
    local limit=$1 what=$2 t0=$SECONDS; shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS - t0 < limit)) || die "timed out after $limit s waiting for $what"
        sleep 0.1
    done
}

ssh_lab() {  # ssh_lab HOST CMD...: as the lab user, strict host keys
    ssh -n -F "$SSH_CONFIG" -o ConnectTimeout=5 "$@"
}

start_hosts() {
    local base=$1 h
    bridge_up
    for h in "${LAB_HOSTS[@]}"; do start_host "$h" "$base"; done
    for h in "${LAB_HOSTS[@]}"; do
        wait_until 20 "sshd on $h" sshd_answers "$h"
    done
    for h in "${LAB_HOSTS[@]}"; do
        [ "$(ssh_lab "$h" hostname)" = "$h" ] || die "ssh $LAB_USER@$h failed"
    done
}

slurm_nodes_in() {  # slurm_nodes_in STATES NODE...: each NODE answers, in one of STATES (a|b)
    local states n
    states=$(host_exec "$LAB_SLURM_CTLD" sinfo -h -N -p "$LAB_PARTITION" -o '%N %t')
    for n in "${@:2}"; do grep -qxE "$n ($1)" <<<"$states" || return 1; done
}

start_slurmctld() {
    host_exec "$LAB_SLURM_CTLD" /usr/sbin/slurmctld </dev/null >/dev/null 2>&1 \
        || die "slurmctld did not start (see /var/log/slurm/slurmctld.log on $LAB_SLURM_CTLD)"
    wait_until 20 "slurmctld" host_exec "$LAB_SLURM_CTLD" scontrol ping
}

start_slurmd() {
    host_exec "$1" /usr/sbin/slurmd --conf-server "$LAB_SLURM_CTLD:6817" </dev/null >/dev/null 2>&1 \
        || die "slurmd did not start on $1 (see /var/log/slurm/slurmd.log there)"
}

start_slurm() {
    local n
    start_slurmctld
    for n in "${LAB_SLURM_NODES[@]}"; do start_slurmd "$n"; done
    wait_until 30 "Slurm nodes idle" slurm_nodes_in idle "${LAB_SLURM_NODES[@]}"
}

# Prints one line per host and returns 0 (all up and healthy), 3 (nothing
# of the lab runs) or 1 (partly up).
lab_status() {
    local h pid running=0 healthy=0 bridge=no
    ip link show "$LAB_BRIDGE" >/dev/null 2>&1 && bridge=yes
    for h in "${LAB_HOSTS[@]}"; do
        if pid=$(host_pid1 "$h"); then
            running=$((running + 1))
            if sshd_answers "$h"; then
                healthy=$((healthy + 1))
                printf '%-6s up    %-12s pid1=%s\n' "$h" "${LAB_ADDR[$h]}" "$pid"
            else
                printf '%-6s up    %-12s pid1=%s (sshd not answering)\n' "$h" "${LAB_ADDR[$h]}" "$pid"
            fi
        elif [ -e "$LAB_STATE/hosts/$h/stopped" ]; then
            printf "%-6s down  %-12s (stopped: 'scripts/lab start %s')\n" "$h" "${LAB_ADDR[$h]}" "$h"
        else
            printf '%-6s down  %s\n' "$h" "${LAB_ADDR[$h]}"
        fi
    done
    if [ $running -eq 0 ]; then
        if [ -n "$(lab_stopped_hosts)" ]; then
            echo "lab: every host stopped ('scripts/lab start HOST' or 'up')"; return 1
        fi
        if [ $bridge = yes ] || [ -n "$(marked_pids "")" ]; then
            echo "lab: leftovers found (bridge or processes): run 'scripts/lab down'"; return 1
        fi
        echo "lab: down"; return 3
    fi
    local slurm_ok=no
    if host_pid1 "$LAB_SLURM_CTLD" >/dev/null; then
        echo "slurm:"
        host_exec "$LAB_SLURM_CTLD" sinfo -h -N -o '  %N %P %T' 2>&1 | sed 's/^ */  /' || true
        host_exec "$LAB_SLURM_CTLD" sinfo -h -N -o '%T' 2>/dev/null \
            | grep -qvE '^(idle|allocated|mixed|completing)$' || slurm_ok=yes
        host_exec "$LAB_SLURM_CTLD" scontrol ping >/dev/null 2>&1 || slurm_ok=no
    fi
    if [ $healthy -eq ${#LAB_HOSTS[@]} ] && [ $slurm_ok = yes ] && [ -e "$LAB_JSON" ]; then
        echo "lab: up ($LAB_JSON), $(lab_access_now)"; return 0
    fi
    echo "lab: partly up"; return 1
}

# Ends every process, namespace, veth, bridge and mount of the lab, found
# by marker and by name (not from a state file), so it also cleans up after
# a crash or a half-finished `up`.
lab_down() {
    local p pids i
    for p in $(marked_pids ""); do   # hosts' PID 1 first: that ends their whole pid namespace
        awk '/^NSpid:/ { exit !($NF == 1 && NF > 2) }' "/proc/$p/status" 2>/dev/null && kill -KILL "$p" 2>/dev/null
    done
    for i in $(seq 100); do
        pids=$(marked_pids "")
        [ -z "$pids" ] && break
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        sleep 0.1
    done
    [ -z "$(marked_pids "")" ] || die "processes still running: $(marked_pids "" | xargs)"
    local link
    for link in $(ip -o link show | awk -F': ' '{ print $2 }' | cut -d@ -f1 | grep "^$LAB_VETH_PREFIX" || true); do
        ip link del "$link" 2>/dev/null || true
    done
    ip link del "$LAB_BRIDGE" 2>/dev/null || true
    for link in $(ip netns list 2>/dev/null | awk '{ print $1 }' | grep "^$LAB_VETH_PREFIX" || true); do
        ip netns del "$link" || true
    done
    # hosts mount only inside their own namespaces; unmount anything that
    # leaked into the machine's anyway, deepest first
    local m
    for m in $(awk '{ print $5 }' /proc/self/mountinfo | grep -E "^($LAB_STATE|$LAB_SITE_ROOT|$LAB_CACHE)(/|$)" | sort -r); do
        umount -l "$m" || true
    done
    remove_access
    rm -rf --one-file-system "$LAB_STATE" "$LAB_SITE_ROOT"
}

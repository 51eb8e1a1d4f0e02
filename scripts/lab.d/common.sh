# shellcheck shell=bash
# Shared settings and helpers of scripts/lab. Sourced, never run.
#
# Everything the lab makes on the machine is named here, so that `down` can
# find leftovers by name (bridge, veths, paths) and by the TOPPIPE_LAB_HOST
# marker in the environment of every host's PID 1.

LAB_CACHE=${TOPPIPE_LAB_CACHE:-/var/cache/toppipe-lab}   # kept by `down`
LAB_STATE=${TOPPIPE_LAB_STATE:-/var/lib/toppipe-lab}     # removed by `down`
LAB_SITE_ROOT=/srv/toppipe-lab                           # removed by `down`
LAB_SHARED=$LAB_SITE_ROOT/shared        # the shared folder's path in every host
LAB_SHARED_SOURCE=$LAB_STATE/shared     # its files: mounted only inside the hosts

# THE SWITCH: how `scripts/lab up` leaves the desktop's access to the site.
#   closed: as on a real site, the desktop reaches only login's sshd (nftables
#           table inet toppipe_lab) and does not see the shared folder;
#   open:   every host and port, and the shared folder at $LAB_SHARED.
# `scripts/lab open|close` switch a running lab (access.sh).
LAB_ACCESS=${TOPPIPE_LAB_ACCESS:-closed}
LAB_NFT_TABLE=toppipe_lab               # family inet
LAB_JSON=$LAB_STATE/lab.json
LAB_LOCK=/run/toppipe-lab.lock

# Versions from config/versions.yml (scripts/config-version). Hosts run that
# Debian suite whatever the machine runs: its python3 is the Python that
# toppipe's wheels are built for, and its Slurm and PostgreSQL those versions.
lab_version() { "$LAB_DIR/../config-version" "$1"; }
LAB_SUITE=${TOPPIPE_LAB_SUITE:-$(lab_version debian)}
LAB_PYTHON=$(lab_version python)
LAB_SLURM=$(lab_version slurm)
LAB_POSTGRESQL=$(lab_version postgresql)
LAB_APPTAINER=$(lab_version apptainer)
LAB_ARCH=$(dpkg --print-architecture)

LAB_BRIDGE=tplab0
LAB_VETH_PREFIX=tplab-                  # machine-side veth: tplab-<host>
LAB_NET=10.213.7                        # private /24 that only the lab uses
LAB_GATEWAY=$LAB_NET.1                  # the machine's address on the bridge
LAB_IFACE=eth0                          # same name in every host (dask interface=)
LAB_HOSTS=(login db node1 node2)
declare -A LAB_ADDR=([login]=$LAB_NET.10 [db]=$LAB_NET.11 [node1]=$LAB_NET.21 [node2]=$LAB_NET.22)
declare -A LAB_ROLES=([login]="login slurmctld" [db]="db" [node1]="compute slurmd" [node2]="compute slurmd")
LAB_SLURM_CTLD=login
LAB_LOGIN=login                         # the one host the desktop reaches when closed
LAB_SLURM_NODES=(node1 node2)
LAB_PARTITION=batch
# a second kind of node: node2 is also the big-memory partition (feature bigmem)
LAB_BIGMEM_PARTITION=bigmem
LAB_BIGMEM_NODE=node2

LAB_USER=toppipe
LAB_UID=2000                            # same uid on every host (shared folder)

LAB_REPO_IN_HOST=/opt/toppipe-lab/apt   # local apt repository, read-only in hosts
LAB_APPTAINER_BIN=/usr/local/bin/apptainer

HOST_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf 'lab: %s\n' "$*" >&2; }
die() { printf 'lab: error: %s\n' "$*" >&2; exit 1; }

# Run a command and print how long it took (for the long steps).
timed() {
    local label=$1 t0=$SECONDS; shift
    log "$label ..."
    "$@" || die "$label failed"
    log "  done in $((SECONDS - t0)) s"
}

hash_of() { cat "$@" | sha256sum | cut -c1-12; }

# PID (on the machine) of host $1's PID 1, or nothing. Found by the marker in
# its environment and by being pid 1 of its own pid namespace, so it works
# without any state file (after a crash, too).
host_pid1() {
    local p
    for p in $(marked_pids "TOPPIPE_LAB_HOST=$1"); do
        if awk '/^NSpid:/ { exit !($NF == 1 && NF > 2) }' "/proc/$p/status" 2>/dev/null; then
            echo "$p"; return 0
        fi
    done
    return 1
}

# All PIDs whose environment holds the exact entry $1 (NAME=VALUE), or any
# TOPPIPE_LAB_* marker when $1 is empty. One grep over /proc keeps it fast.
marked_pids() {
    local files
    if [ -n "$1" ]; then
        files=$(grep -lazxF -- "$1" /proc/[0-9]*/environ 2>/dev/null)
    else
        files=$(grep -laz '^TOPPIPE_LAB_\(HOST\|BUILD\)=' /proc/[0-9]*/environ 2>/dev/null)
    fi
    local f p
    for f in $files; do
        p=${f#/proc/}; p=${p%/environ}
        [ "$p" != $$ ] && [ "$p" != "$BASHPID" ] && echo "$p"
    done
    return 0
}

# Close every fd above stderr of this (sub)shell: what runs in the hosts
# must not hold this script's lock (fd 9) or a caller's (`flock FILE cmd`).
close_inherited_fds() {
    local fd
    for fd in $(ls /proc/"$BASHPID"/fd); do
        [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null
    done
    return 0
}

# Run a command inside a running host as root (no ssh needed).
host_exec() {
    local h=$1 pid; shift
    pid=$(host_pid1 "$h") || die "host $h is not running"
    (close_inherited_fds
     exec nsenter -t "$pid" -m -u -i -n -p -r -w env -i PATH=$HOST_PATH HOME=/root LANG=C.UTF-8 "$@")
}

# The Debian archive URI configured on the machine (kind "main", or
# "security"), read at run time so that no mirror host name lives in the
# repo. Prefers URIs ending in /debian (/debian-security) over any other
# URI that merely mentions debian.
apt_mirror() {
    local kind=${1:-main} uris
    uris=$({
        cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; break } }'
        cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
            | awk 'tolower($1) == "uris:" { for (i = 2; i <= NF; i++) print $i }'
    } | sed 's:/*$::')
    if [ "$kind" = security ]; then
        { grep '/debian-security$' <<<"$uris" || grep 'debian-security' <<<"$uris"; } | head -1
    else
        { grep '/debian$' <<<"$uris" || grep 'debian' <<<"$uris" | grep -v security; } | head -1
    fi
}

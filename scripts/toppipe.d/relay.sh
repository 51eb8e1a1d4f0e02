# The host relay: a deploy run from the client image runs its shell commands for this
# desktop (service starts and stops, probes of /proc, ss, log tails) here, on the host,
# through scripts/toppipe.d/on-host inside the container.
#
# Why: a user's Apptainer puts every `apptainer exec` in a user namespace of its own. A
# process started inside one (a service) cannot be inspected from inside another (the next
# deploy): its /proc/PID/environ, where the site's marker is, is refused. From the host,
# whose user owns both namespaces, it can. And commands the desktop has but the image has
# not (apptainer itself, for a site's instances) run where they are.
#
# The relay is a folder only this user can enter: a FIFO of requests, and per request
# ID.sh (the script), ID.in (its standard input) and FIFOs ID.out, ID.err and ID.rc.

# Start the relay in the background; sets relay_dir (exported as TOPPIPE_HOST_RELAY by the caller).
relay_start() {
    relay_dir=$(mktemp -d "${TMPDIR:-/tmp}/toppipe-relay.XXXXXXXX") || return 2
    mkfifo -m 600 "$relay_dir/requests"
    _relay_serve "$relay_dir" </dev/null >/dev/null 2>&1 &
    relay_pid=$!
}

relay_stop() {
    [[ -n ${relay_pid:-} ]] && kill "$relay_pid" 2>/dev/null
    [[ -n ${relay_dir:-} ]] && rm -rf "$relay_dir"
    relay_pid="" relay_dir=""
}

_relay_serve() {
    local dir=$1 id
    exec 3<>"$dir/requests"  # read and write: no end of file when a client closes it
    while read -r id <&3; do
        [[ $id =~ ^[A-Za-z0-9._-]+$ && -f $dir/$id.sh ]] || continue
        (
            bash "$dir/$id.sh" <"$dir/$id.in" >"$dir/$id.out" 2>"$dir/$id.err"
            echo $? >"$dir/$id.rc"
        ) 3<&- &
    done
}

# shellcheck shell=bash
# The machine's own tools for `lab up`: Debian packages, installed only when
# missing (a fresh machine gets them here; nothing else installs them).

# command -> Debian package, for the tools `lab` runs on the machine
declare -A LAB_MACHINE_TOOLS=(
    [debootstrap]=debootstrap [ip]=iproute2 [bridge]=iproute2
    [unshare]=util-linux [nsenter]=util-linux [pivot_root]=util-linux [setsid]=util-linux
    [ssh]=openssh-client [ssh-keygen]=openssh-client
    [patchelf]=patchelf [apt-ftparchive]=apt-utils
    [mksquashfs]=squashfs-tools [newuidmap]=uidmap
    [update-ca-certificates]=ca-certificates
    [nft]=nftables
)

ensure_machine_packages() {
    local cmd missing=()
    for cmd in "${!LAB_MACHINE_TOOLS[@]}"; do
        command -v "$cmd" >/dev/null || missing+=("${LAB_MACHINE_TOOLS[$cmd]}")
    done
    # apt must not start services in this machine (no init system here)
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# made by toppipe scripts/lab: never start services from apt\nexit 101\n' \
            >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
    fi
    [ ${#missing[@]} -eq 0 ] && return 0
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    log "installing on the machine: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    local out; out=$(mktemp)
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$out" 2>&1 \
        || { cat "$out" >&2; rm -f "$out"; die "apt-get install ${missing[*]} failed"; }
    rm -f "$out"
}

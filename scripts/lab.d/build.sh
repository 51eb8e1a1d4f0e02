# shellcheck shell=bash
# The base tree of every host, cached under $LAB_CACHE:
#   - base-<key>/rootfs: one debootstrap tree that every host mounts read-only
#     as the lower layer of its overlayfs root
#   - base-<key>/repo:   the local apt repository the base was installed from
# <key> hashes the suite, the architecture, the packages (with the versions
# of config/versions.yml) and this file, so changing any of them builds a new
# base; older bases are pruned.

# packages.txt with its {python}, {slurm} and {postgresql} filled in
lab_packages() {
    sed -e 's/#.*//' -e "s/{python}/$LAB_PYTHON/g" -e "s/{slurm}/$LAB_SLURM/g" \
        -e "s/{postgresql}/$LAB_POSTGRESQL/g" "$LAB_DIR/packages.txt" | xargs
}

base_key() {
    { echo "$LAB_SUITE $LAB_ARCH $LAB_UID"; lab_packages; cat "$LAB_DIR/build.sh"; } \
        | sha256sum | cut -c1-12
}

base_dir() { echo "$LAB_CACHE/base-$(base_key)"; }

ensure_base() {
    local dir; dir=$(base_dir)
    [ -e "$dir/ok" ] && return 0
    local mirror security
    mirror=$(apt_mirror main) || true
    security=$(apt_mirror security) || true
    [ -n "$mirror" ] || die "no Debian archive found in /etc/apt/sources.list(.d)"
    rm -rf --one-file-system "$dir.tmp" && mkdir -p "$dir.tmp/repo"
    timed "debootstrap $LAB_SUITE base (about 30-60 s)" run_debootstrap "$dir.tmp" "$mirror"
    timed "local apt repository + packages into the base (about 1 min)" \
        build_base_packages "$dir.tmp" "$mirror" "$security"
    touch "$dir.tmp/ok"
    mv "$dir.tmp" "$dir"
    local old
    for old in "$LAB_CACHE"/base-*; do
        [ "$old" = "$dir" ] || rm -rf --one-file-system "$old"
    done
}

# In a private mount + pid namespace (as the chroot step below): the mounts
# debootstrap makes in the target, and its processes, cannot outlive it.
# Marked TOPPIPE_LAB_BUILD and without the lock's fd 9, so that after a
# crash `lab down` can find and end it.
run_debootstrap() {
    TOPPIPE_LAB_BUILD=1 unshare --mount --pid --fork --propagation private \
        debootstrap --variant=minbase "$LAB_SUITE" "$1/rootfs" "$2" >"$1/debootstrap.log" 2>&1 9>&- \
        || { tail -20 "$1/debootstrap.log" >&2; return 1; }
}

# Fill the repository from the mirror with the base's own apt (download
# only), index it, then install from that repository alone: what the hosts
# have is exactly what the repository holds.
build_base_packages() {
    local d=$1 mirror=$2 security=$3 r=$1/rootfs
    {
        echo "deb $mirror $LAB_SUITE main"
        echo "deb $mirror $LAB_SUITE-updates main"
        [ -n "$security" ] && echo "deb $security $LAB_SUITE-security main"
    } >"$r/etc/apt/sources.list"
    # outbound TLS may be re-signed by a CA that only the machine trusts
    cp /etc/ssl/certs/ca-certificates.crt "$r/etc/apt/lab-build-ca.crt"
    echo 'Acquire::https::CAInfo "/etc/apt/lab-build-ca.crt";' >"$r/etc/apt/apt.conf.d/99lab-build-ca"
    printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d" && chmod 755 "$r/usr/sbin/policy-rc.d"
    # PostgreSQL binaries only: toppipe makes its own cluster as its user
    mkdir -p "$r/etc/postgresql-common"
    echo 'create_main_cluster = false' >"$r/etc/postgresql-common/createcluster.conf"
    mkdir -p "$r$LAB_REPO_IN_HOST"
    cp -L /etc/resolv.conf "$r/etc/resolv.conf" 2>/dev/null || true

    # A private mount + pid namespace: the chroot's mounts and any stray
    # process vanish with it, even if this build is killed half-way.
    TOPPIPE_LAB_BUILD=1 unshare --mount --pid --fork --propagation private \
        bash -euc '
        r=$1 repo=$2 inrepo=$3 user=$5 uid=$6
        read -ra pkgs <<<"$4"   # split, never globbed: "slurmd=22.05*" is an apt pattern
        mount -t proc proc "$r/proc"
        mount --bind /dev "$r/dev"
        mount -t sysfs sysfs "$r/sys"
        mount --bind "$repo" "$r$inrepo"
        run_in() { chroot "$r" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"; }
        run_in apt-get update -qq
        run_in apt-get install -y -qq --no-install-recommends --download-only "${pkgs[@]}"
        run_in apt-get dist-upgrade -y -qq --download-only   # -updates, -security
        mv "$r"/var/cache/apt/archives/*.deb "$repo/"
        (cd "$repo" && apt-ftparchive packages . >Packages && gzip -9kf Packages \
            && apt-ftparchive release . >Release)
        echo "deb [trusted=yes] file:$inrepo ./" >"$r/etc/apt/sources.list"
        rm -f "$r/etc/apt/apt.conf.d/99lab-build-ca" "$r/etc/apt/lab-build-ca.crt"
        rm -rf "$r"/var/lib/apt/lists/*
        run_in apt-get update -qq
        run_in apt-get dist-upgrade -y -qq >/dev/null
        run_in apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
        run_in apt-get clean
        # the lab user: same uid everywhere; "*" (not "!") so that sshd
        # without PAM does not treat the key-only account as locked
        run_in useradd -u "$uid" -U -m -s /bin/bash "$user"
        run_in usermod -p "*" "$user"
        # per-host keys are made at `up`; never share the ones apt made
        rm -f "$r"/etc/ssh/ssh_host_*
        run_in mkdir -p /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm /run/munge
        run_in chown slurm:slurm /var/lib/slurm/slurmctld /var/log/slurm
        umount "$r$inrepo" "$r/sys" "$r/dev" "$r/proc"
    ' build "$r" "$d/repo" "$LAB_REPO_IN_HOST" "$(lab_packages)" "$LAB_USER" "$LAB_UID" \
        >"$d/packages.log" 2>&1 9>&- || { tail -20 "$d/packages.log" >&2; return 1; }
    # hosts have no DNS: names come from /etc/hosts
    echo '# toppipe lab: no DNS, names are in /etc/hosts' >"$r/etc/resolv.conf"
}

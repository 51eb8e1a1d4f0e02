#!/bin/bash
# First stage of a lab host. `lab up` starts it as PID 1 of new pid, mount,
# uts, ipc and network namespaces (unshare), with these variables set:
#   LAB_HOST LAB_LOWER LAB_UPPER LAB_WORK LAB_ROOT LAB_SEED
#   LAB_SHARED LAB_SHARED_SOURCE LAB_APPTAINER_DIR LAB_REPO LAB_REPO_IN_HOST TOPPIPE_LAB_HOST
# It assembles the host's root file system, then pivots into it and hands
# over to tini + /etc/toppipe-lab/init.sh. Every mount made here lives in
# the host's own mount namespace: it disappears when the host's PID 1 dies.
set -euo pipefail
r=$LAB_ROOT

# root: overlayfs over the shared, read-only base tree
mount -t overlay overlay -o "lowerdir=$LAB_LOWER,upperdir=$LAB_UPPER,workdir=$LAB_WORK" "$r"
# this host's own files (names, keys, configs); existing folders keep
# their owner and mode, ids are numeric (the machine's names may differ)
tar -C "$LAB_SEED" --numeric-owner -cf - . | tar -C "$r" --numeric-owner --no-overwrite-dir -xpf -

mount -t proc proc "$r/proc"
mount -t sysfs sysfs "$r/sys"
# slurmd 22.05 wants a cgroup mount even with proctrack/linuxproc
mount -t tmpfs -o mode=755,nosuid,nodev,noexec cgroup "$r/sys/fs/cgroup"
mkdir "$r/sys/fs/cgroup/systemd"
mount -t cgroup -o none,name=systemd cgroup "$r/sys/fs/cgroup/systemd"

# a private /dev: only the usual nodes, and /dev/fuse open to every user
# (unprivileged apptainer) without changing the machine's /dev
mount -t tmpfs -o mode=755,nosuid dev "$r/dev"
mknod -m 666 "$r/dev/null" c 1 3
mknod -m 666 "$r/dev/zero" c 1 5
mknod -m 666 "$r/dev/full" c 1 7
mknod -m 666 "$r/dev/random" c 1 8
mknod -m 666 "$r/dev/urandom" c 1 9
mknod -m 666 "$r/dev/tty" c 5 0
mknod -m 666 "$r/dev/fuse" c 10 229
mkdir -m 755 "$r/dev/pts"
mkdir -m 1777 "$r/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$r/dev/pts"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$r/dev/shm"
ln -s pts/ptmx "$r/dev/ptmx"
ln -s /proc/self/fd "$r/dev/fd"
ln -s /proc/self/fd/0 "$r/dev/stdin"
ln -s /proc/self/fd/1 "$r/dev/stdout"
ln -s /proc/self/fd/2 "$r/dev/stderr"

mount -t tmpfs -o mode=755,nosuid,nodev run "$r/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmp "$r/tmp"

# the site's shared file system: a folder of the lab's own, mounted at the
# same path in every host (the desktop sees it only while the lab is open)
mkdir -p "$r$LAB_SHARED"
mount --bind "$LAB_SHARED_SOURCE" "$r$LAB_SHARED"
# read-only: apptainer's prefix (same path: its ELF interpreter is absolute)
# and the local apt repository
bind_ro() { mkdir -p "$2" && mount --bind "$1" "$2" && mount -o remount,bind,ro "$2"; }
bind_ro "$LAB_APPTAINER_DIR" "$r$LAB_APPTAINER_DIR"
bind_ro "$LAB_REPO" "$r$LAB_REPO_IN_HOST"

hostname "$LAB_HOST"

# pivot_root, not chroot: inside a chroot the kernel refuses new user
# namespaces, which unprivileged apptainer needs. init.sh detaches .oldroot.
cd "$r"
mkdir -p .oldroot
pivot_root . .oldroot
cd /
exec env -i TOPPIPE_LAB_HOST="$LAB_HOST" PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    /usr/bin/tini -- /bin/sh /etc/toppipe-lab/init.sh

#!/bin/sh
# Second stage of a lab host, installed as /etc/toppipe-lab/init.sh and run
# by tini (PID 1) inside the host's own root. Starts the daemons every host
# has (munged, sshd); `lab up` starts the Slurm daemons afterwards, in order.
# Then it only waits: tini reaps orphans, and killing PID 1 ends the host.
set -eu
umount -l /.oldroot && rmdir /.oldroot       # drop the machine's file tree
ip link set lo up

mkdir -p /run/sshd /run/munge /run/slurm /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 755 /run/munge
chown slurm:slurm /run/slurm
setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged
/usr/sbin/sshd -E /var/log/sshd.log
echo "$(hostname): munged and sshd started"
exec sleep infinity

# shellcheck shell=bash
# Per-`up` configuration of the site: keys, the shared folder, each host's
# seed files (copied over its root at boot), slurm.conf and lab.json.
# All of it lives in $LAB_STATE and $LAB_SITE_ROOT, which `down` removes.

SSH_DIR=$LAB_STATE/ssh
SSH_KEY=$SSH_DIR/id_ed25519
SSH_KNOWN_HOSTS=$SSH_DIR/known_hosts
SSH_CONFIG=$SSH_DIR/config

# uid/gid of a user of the base tree (the machine may not have it)
base_ids() { awk -F: -v u="$2" '$1 == u { print $3 ":" $4 }' "$1/etc/passwd"; }

prepare_site() {
    local base=$1 h
    mkdir -p "$LAB_STATE/hosts" "$SSH_DIR"
    chmod 755 "$LAB_STATE" "$SSH_DIR"
    # the shared file system: writable by the lab user, group-inherited
    mkdir -p "$LAB_SHARED_SOURCE"
    chown "$LAB_UID:$LAB_UID" "$LAB_SHARED_SOURCE"
    chmod 2775 "$LAB_SHARED_SOURCE"

    # the lab user's login key, kept on the machine only
    rm -f "$SSH_KEY" "$SSH_KEY.pub"
    ssh-keygen -q -t ed25519 -N '' -C "$LAB_USER@toppipe-lab" -f "$SSH_KEY"
    chmod 600 "$SSH_KEY"

    # the lab user's key inside the site (login -> nodes), as on real
    # clusters; a different key from the machine's one
    rm -f "$SSH_DIR/site_ed25519" "$SSH_DIR/site_ed25519.pub"
    ssh-keygen -q -t ed25519 -N '' -C "$LAB_USER@toppipe-lab-site" -f "$SSH_DIR/site_ed25519"

    # one munge key for every host
    local munge_key=$LAB_STATE/munge.key
    head -c 1024 /dev/urandom >"$munge_key" && chmod 600 "$munge_key"

    : >"$SSH_KNOWN_HOSTS"
    for h in "${LAB_HOSTS[@]}"; do
        prepare_seed "$base" "$h" "$munge_key"
        printf '%s,%s %s\n' "$h" "${LAB_ADDR[$h]}" \
            "$(cut -d' ' -f1,2 "$LAB_STATE/hosts/$h/seed/etc/ssh/ssh_host_ed25519_key.pub")" \
            >>"$SSH_KNOWN_HOSTS"
    done
    chmod 644 "$SSH_KNOWN_HOSTS"
    # the same known_hosts inside the hosts, for ssh between them
    for h in "${LAB_HOSTS[@]}"; do
        install -m 644 "$SSH_KNOWN_HOSTS" "$LAB_STATE/hosts/$h/seed/etc/ssh/ssh_known_hosts"
    done
    write_ssh_config
}

# Files this host gets over its base tree (owners are numeric ids of the base).
prepare_seed() {
    local base=$1 h=$2 munge_key=$3 s=$LAB_STATE/hosts/$2/seed
    local user_ids munge_ids
    user_ids=$(base_ids "$base" "$LAB_USER")
    munge_ids=$(base_ids "$base" munge)
    [ -n "$user_ids" ] && [ -n "$munge_ids" ] || die "base tree lacks users $LAB_USER/munge"
    rm -rf "$s"
    mkdir -p "$s/etc/ssh/sshd_config.d" "$s/etc/toppipe-lab" "$s/etc/munge" "$s/usr/local/bin" \
        "$s/home/$LAB_USER/.ssh" "$s/etc/slurm"
    echo "$h" >"$s/etc/hostname"
    {
        echo "127.0.0.1 localhost"
        echo "::1 localhost ip6-localhost ip6-loopback"
        local o
        for o in "${LAB_HOSTS[@]}"; do echo "${LAB_ADDR[$o]} $o"; done
    } >"$s/etc/hosts"
    ssh-keygen -q -t ed25519 -N '' -C "root@$h" -f "$s/etc/ssh/ssh_host_ed25519_key"
    cat >"$s/etc/ssh/sshd_config.d/toppipe-lab.conf" <<'EOF'
# toppipe lab: key-only logins for ordinary users, no root
# (first value wins: this file is included before the defaults)
HostKey /etc/ssh/ssh_host_ed25519_key
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
# pam_loginuid fails inside these hosts
UsePAM no
# deploy tools open many sessions over one connection
MaxSessions 64
MaxStartups 64:30:128
EOF
    install -m 400 "$munge_key" "$s/etc/munge/munge.key"
    chown "$munge_ids" "$s/etc/munge/munge.key"
    install -m 700 -d "$s/home/$LAB_USER/.ssh"
    cat "$SSH_KEY.pub" "$SSH_DIR/site_ed25519.pub" >"$s/home/$LAB_USER/.ssh/authorized_keys"
    install -m 600 "$SSH_DIR/site_ed25519" "$s/home/$LAB_USER/.ssh/id_ed25519"
    install -m 644 "$SSH_DIR/site_ed25519.pub" "$s/home/$LAB_USER/.ssh/id_ed25519.pub"
    chmod 600 "$s/home/$LAB_USER/.ssh/authorized_keys"
    chown -R "$user_ids" "$s/home/$LAB_USER/.ssh"
    install -m 755 "$LAB_DIR/host-init.sh" "$s/etc/toppipe-lab/init.sh"
    echo "${LAB_ROLES[$h]}" >"$s/etc/toppipe-lab/roles"
    ln -s "$(apptainer_dir)/usr/bin/apptainer" "$s$LAB_APPTAINER_BIN"
    if [ "$h" = "$LAB_SLURM_CTLD" ]; then
        render_slurm_conf >"$s/etc/slurm/slurm.conf"
    else
        rmdir "$s/etc/slurm"   # configless: slurmd fetches it from the controller
    fi
}

write_ssh_config() {
    {
        echo "# toppipe lab: ssh -F $SSH_CONFIG <host>"
        local h
        for h in "${LAB_HOSTS[@]}"; do
            printf 'Host %s\n    HostName %s\n' "$h" "${LAB_ADDR[$h]}"
            # through login, as on a real site (works open or closed)
            [ "$h" = "$LAB_LOGIN" ] || printf '    ProxyJump %s\n' "$LAB_LOGIN"
        done
        printf 'Host %s\n' "${LAB_HOSTS[*]}"
        printf '    User %s\n    IdentityFile %s\n    IdentitiesOnly yes\n' "$LAB_USER" "$SSH_KEY"
        printf '    UserKnownHostsFile %s\n    StrictHostKeyChecking yes\n' "$SSH_KNOWN_HOSTS"
        printf "    BatchMode yes\n"
    } >"$SSH_CONFIG"
    chmod 644 "$SSH_CONFIG"
}

render_slurm_conf() {
    local cpus mem_mb node_mem n
    # the lab's jobs mostly wait (tests): each node offers twice this machine's cores, so that
    # modules with sites of their own can run beside the shared site (scripts/test)
    cpus=$(( $(nproc) * 2 ))
    mem_mb=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
    # two nodes share this machine: offer each a quarter of its memory
    node_mem=$(( mem_mb / 4 < 1024 ? 1024 : mem_mb / 4 ))
    cat <<EOF
# toppipe lab: Slurm 22.05, controller on login, nodes in configless mode
ClusterName=toppipelab
SlurmctldHost=$LAB_SLURM_CTLD(${LAB_ADDR[$LAB_SLURM_CTLD]})
SlurmctldParameters=enable_configless
AuthType=auth/munge
SlurmUser=slurm
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# no systemd and no cgroup controllers in the hosts
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# nodes share the machine's cores: trust this file, not the hardware probe
SlurmdParameters=config_overrides
DefMemPerCPU=512
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
MinJobAge=120
EOF
    for n in "${LAB_SLURM_NODES[@]}"; do
        local features=""
        [ "$n" = "$LAB_BIGMEM_NODE" ] && features=" Features=bigmem"
        echo "NodeName=$n NodeAddr=${LAB_ADDR[$n]} CPUs=$cpus RealMemory=$node_mem$features State=UNKNOWN"
    done
    echo "PartitionName=$LAB_PARTITION Nodes=$(IFS=,; echo "${LAB_SLURM_NODES[*]}") Default=YES" \
        "MaxTime=7-00:00:00 DefaultTime=1-00:00:00 LLN=YES State=UP"
    echo "PartitionName=$LAB_BIGMEM_PARTITION Nodes=$LAB_BIGMEM_NODE" \
        "MaxTime=7-00:00:00 DefaultTime=1-00:00:00 State=UP"
}

json_list() { local s="" x; for x in "$@"; do s+="${s:+, }\"$x\""; done; printf '[%s]' "$s"; }

write_lab_json() {
    local h hosts="" roles
    for h in "${LAB_HOSTS[@]}"; do
        read -ra roles <<<"${LAB_ROLES[$h]}"
        hosts+="${hosts:+,}
    {\"name\": \"$h\", \"address\": \"${LAB_ADDR[$h]}\", \"roles\": $(json_list "${roles[@]}")}"
    done
    local py_version appt_version pg_bindir
    py_version=$(host_exec login python3 -c 'import platform; print(platform.python_version())')
    pg_bindir=$(host_exec db sh -c 'ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1')
    appt_version=$("$(apptainer_dir)/usr/bin/apptainer" --version | awk '{ print $NF }')
    cat >"$LAB_JSON.tmp" <<EOF
{
  "schema": 1,
  "name": "toppipe-lab",
  "hosts": [$hosts
  ],
  "subnet": "$LAB_NET.0/24",
  "gateway": "$LAB_GATEWAY",
  "bridge": "$LAB_BRIDGE",
  "interface": "$LAB_IFACE",
  "ssh_user": "$LAB_USER",
  "ssh_port": 22,
  "ssh_private_key": "$SSH_KEY",
  "ssh_known_hosts": "$SSH_KNOWN_HOSTS",
  "ssh_config": "$SSH_CONFIG",
  "user_uid": $LAB_UID,
  "shared_path": "$LAB_SHARED",
  "access": "$(cat "$LAB_STATE/access" 2>/dev/null || echo "$LAB_ACCESS")",
  "jump_host": "$LAB_LOGIN",
  "slurm_controller": "$LAB_SLURM_CTLD",
  "slurm_partition": "$LAB_PARTITION",
  "slurm_bigmem_partition": "$LAB_BIGMEM_PARTITION",
  "slurm_bigmem_node": "$LAB_BIGMEM_NODE",
  "slurm_nodes": $(json_list "${LAB_SLURM_NODES[@]}"),
  "python": "/usr/bin/python3",
  "python_version": "$py_version",
  "apptainer": "$LAB_APPTAINER_BIN",
  "apptainer_version": "$appt_version",
  "apptainer_machine": "$LAB_APPTAINER_BIN",
  "apt_repository": "$LAB_REPO_IN_HOST",
  "postgresql_bindir": "$pg_bindir",
  "redis_server": "/usr/bin/redis-server"
}
EOF
    mv "$LAB_JSON.tmp" "$LAB_JSON"
    chmod 644 "$LAB_JSON"
}

# shellcheck shell=bash
# The desktop's access to the site (LAB_ACCESS in common.sh; `lab open`,
# `lab close`). Closed: an nftables table of the lab's own drops everything
# the desktop (this machine's network namespace) sends to the bridge except
# TCP to login's sshd, and every new connection from the hosts to the
# desktop; the shared folder is not on the desktop. Hosts talk to each other
# over the bridge, which these rules never see. Open: no table, and the
# shared folder at the hosts' path on the desktop too (a symlink).
# The mode of a running lab is kept in $LAB_STATE/access.

lab_access_now() {  # prints closed or open: what the machine shows, not a state file
    if nft list table inet "$LAB_NFT_TABLE" >/dev/null 2>&1; then echo closed; else echo open; fi
}

close_site() {
    # one transaction: the table is replaced whole, so this is idempotent
    nft -f - <<EOF || die "nft could not load table inet $LAB_NFT_TABLE"
table inet $LAB_NFT_TABLE
delete table inet $LAB_NFT_TABLE
table inet $LAB_NFT_TABLE {
    chain output {
        type filter hook output priority 0; policy accept;
        oifname "$LAB_BRIDGE" ip daddr ${LAB_ADDR[$LAB_LOGIN]} tcp dport 22 accept
        oifname "$LAB_BRIDGE" drop
    }
    chain input {
        type filter hook input priority 0; policy accept;
        iifname "$LAB_BRIDGE" ip saddr ${LAB_ADDR[$LAB_LOGIN]} tcp sport 22 ct state established accept
        iifname "$LAB_BRIDGE" drop
    }
}
EOF
    [ -L "$LAB_SHARED" ] && rm -f "$LAB_SHARED"
    rmdir "$LAB_SHARED" 2>/dev/null || true
    record_access closed
}

open_site() {
    nft delete table inet "$LAB_NFT_TABLE" 2>/dev/null || true
    if [ -d "$LAB_SHARED_SOURCE" ] && [ ! -e "$LAB_SHARED" ]; then
        mkdir -p "$LAB_SITE_ROOT" && chmod 755 "$LAB_SITE_ROOT"
        ln -s "$LAB_SHARED_SOURCE" "$LAB_SHARED"
    fi
    record_access open
}

record_access() {
    [ -d "$LAB_STATE" ] || return 0
    echo "$1" >"$LAB_STATE/access"
    [ -e "$LAB_JSON" ] && sed -i "s/^  \"access\": \"[a-z]*\"/  \"access\": \"$1\"/" "$LAB_JSON"
    return 0
}

# `up`: the mode recorded for this lab (a crash may have lost the rules),
# else the switch's.
apply_access() {
    local mode; mode=$(cat "$LAB_STATE/access" 2>/dev/null || echo "$LAB_ACCESS")
    case $mode in
        closed) close_site ;;
        open) open_site ;;
        *) die "TOPPIPE_LAB_ACCESS=$mode: write closed or open" ;;
    esac
}

# `down`: no state needed, the table is found by name
remove_access() {
    nft delete table inet "$LAB_NFT_TABLE" 2>/dev/null || true
}

# shellcheck shell=bash
# Apptainer for the machine and every host, cached in $LAB_CACHE/apptainer-<key>.
#
# Debian 12 and 13 do not package Apptainer; unstable does, but its binary
# needs glibc >= 2.38 (Debian 12 has 2.36, and the hosts run Debian 12 on any
# machine). So: extract unstable's apptainer, libc6, libseccomp2 and
# libsqlite3-0 into a private prefix and point the two ELF programs at that
# libc with patchelf. The interpreter path is absolute, so the prefix lives
# at the same path on the machine and (bind-mounted read-only) in the hosts.
# The version is `apptainer:` of config/versions.yml ($LAB_APPTAINER); unstable
# keeps only its newest, so a cold build fails once it has moved on, and says
# to which version to move.

apptainer_key() { { echo "$LAB_ARCH $LAB_APPTAINER"; cat "$LAB_DIR/apptainer.sh"; } | sha256sum | cut -c1-12; }
apptainer_dir() { echo "$LAB_CACHE/apptainer-$(apptainer_key)"; }

ensure_apptainer() {
    local dir; dir=$(apptainer_dir)
    if [ ! -e "$dir/ok" ]; then
        timed "apptainer from Debian unstable into $dir (about 15 s)" build_apptainer "$dir"
        local old
        for old in "$LAB_CACHE"/apptainer-*; do
            [ "$old" = "$dir" ] || rm -rf --one-file-system "$old"
        done
    fi
    # on the machine: a symlink on PATH, unless an apptainer of its own is there
    local link=$LAB_APPTAINER_BIN
    if [ ! -e "$link" ] || { [ -L "$link" ] && [[ $(readlink "$link") == "$LAB_CACHE"/* ]]; }; then
        ln -sfn "$dir/usr/bin/apptainer" "$link"
    fi
}

build_apptainer() {
    local dir=$1 tmp=$1.tmp mirror
    mirror=$(apt_mirror main) || true
    [ -n "$mirror" ] || die "no Debian archive found in /etc/apt/sources.list(.d)"
    rm -rf --one-file-system "$tmp" && mkdir -p "$tmp"/apt/{lists/partial,archives/partial,sources,cache} "$tmp/debs"
    # a private apt configuration for unstable: the machine's own apt setup
    # (sources, lists, pinning) stays untouched
    printf 'Types: deb\nURIs: %s\nSuites: sid\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$mirror" >"$tmp/apt/sources/sid.sources"
    local opts=(
        -o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$tmp/apt/sources"
        -o "Dir::State::Lists=$tmp/apt/lists" -o "Dir::Cache=$tmp/apt/cache"
        -o "Dir::Cache::archives=$tmp/apt/archives" -o "Dir::State::status=/dev/null"
        -o "Dir::Etc::Preferences=/dev/null" -o "Dir::Etc::PreferencesParts=$tmp/apt/sources"
        -o "APT::Sandbox::User=root" -qq
    )
    apt-get "${opts[@]}" update || return 1
    if ! (cd "$tmp/debs" && apt-get "${opts[@]}" download "apptainer=$LAB_APPTAINER*" libc6 libseccomp2 libsqlite3-0); then
        log "Debian unstable has no apptainer $LAB_APPTAINER; it has $(apt-cache "${opts[@]}" policy apptainer \
            | awk '/Candidate:/ { print $2 }'): move apptainer: in config/versions.yml"
        return 1
    fi
    local deb
    for deb in "$tmp"/debs/*.deb; do dpkg-deb -x "$deb" "$tmp/root" || return 1; done
    local r=$tmp/root
    # A relocated apptainer reads <prefix>/usr/etc and <prefix>/usr/var; its
    # starter looks one level lower (usr/lib/etc): link both to one place.
    mkdir -p "$r/usr/etc" "$r/usr/var/lib"
    mv "$r/etc/apptainer" "$r/usr/etc/apptainer"
    mv "$r/var/lib/apptainer" "$r/usr/var/lib/apptainer"
    mkdir -p "$r/usr/var/lib/apptainer/mnt/session"
    ln -s ../etc "$r/usr/lib/etc"
    ln -s ../var "$r/usr/lib/var"
    rm -rf "$r/etc" "$r/var" "$r/usr/share/doc" "$r/usr/share/man" "$r/usr/share/locale" "$r/usr/share/lintian"
    # unstable's loader, e.g. usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
    local interp libdir elf
    interp=$(cd "$r" && ls usr/lib/*/ld-linux*.so.* | head -1)
    [ -n "$interp" ] || return 1
    libdir=${interp%/*}
    for elf in "$r/usr/bin/apptainer" "$r/$libdir/apptainer/bin/starter"; do
        patchelf --set-interpreter "$dir/$interp" --force-rpath --set-rpath "$dir/$libdir" "$elf" || return 1
    done
    # No CAP_SYS_RESOURCE here: root must use file capabilities, not "full".
    # No systemd: cgroups are managed directly (and unused by the lab).
    sed -i -e 's/^root default capabilities = .*/root default capabilities = file/' \
        -e 's/^systemd cgroups = .*/systemd cgroups = no/' "$r/usr/etc/apptainer/apptainer.conf"
    rm -rf "$dir" && mkdir -p "$dir"
    mv "$r/usr" "$dir/usr"
    "$dir/usr/bin/apptainer" --version >/dev/null || return 1
    rm -rf "$tmp"
    touch "$dir/ok"
}

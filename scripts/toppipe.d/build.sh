# An image of containers/images.txt and the images it starts from, built as this user
# where not cached, without Python: how the entry script gets the client image on its
# first use. The twin of deploy.images.build's arguments (tests/unit/test_entry_script.py
# keeps the two equal); the build itself is build-image, which deploy/images.py runs too.
#   source scripts/toppipe.d/digest.sh scripts/toppipe.d/build.sh; build_image client
#   (from the repository's root; prints the image's path; progress to stderr)

CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

# The Debian archive of this machine's apt sources (not the security archive), or
# $TOPPIPE_DEBIAN_MIRROR: the twin of deploy.images.debian_mirror.
debian_mirror() {
    local apt=${1:-/etc/apt} file uris found
    [[ -n ${TOPPIPE_DEBIAN_MIRROR:-} ]] && { echo "${TOPPIPE_DEBIAN_MIRROR%/}"; return 0; }
    uris=$(
        for file in "$apt/sources.list" "$apt"/sources.list.d/*.list; do
            [[ -f $file ]] && awk '{ sub(/#.*/, ""); n = 0
                for (i = 1; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) word[++n] = $i
                if (n >= 2 && word[1] == "deb") print word[2] }' "$file"
        done
        for file in "$apt"/sources.list.d/*.sources; do
            [[ -f $file ]] && awk '{ key = $0; sub(/:.*/, "", key); gsub(/[ \t]/, "", key) }
                index($0, ":") && tolower(key) == "uris" { sub(/^[^:]*:/, ""); n = split($0, uri, " ")
                for (i = 1; i <= n; i++) print uri[i] }' "$file"
        done | cat
    )
    uris=$(sed 's:/*$::' <<<"$uris")
    found=$(grep -m1 '/debian$' <<<"$uris" || grep -v security <<<"$uris" | grep -m1 debian) || {
        echo "error: no Debian archive in $apt/sources.list(.d); set TOPPIPE_DEBIAN_MIRROR=URL" >&2
        return 2
    }
    echo "$found"
}

# The build args of image NAME (digest DIGEST, base image BASE or -), one per line: those
# of BASE or SUITE and MIRROR, CA_BUNDLE, its versions, INPUTS_DIGEST, as far as its
# definition declares them ({{ KEY }}).
image_build_args() {
    local name=$1 digest=$2 base=$3 line definition keys key value declared values=()
    line=$(_image_line "$name") || return 2
    read -r _ definition _ _ keys <<<"$line"
    if [[ $base != - ]]; then
        values+=("BASE=$base")
    else
        value=$(scripts/config-version debian) && values+=("SUITE=$value") || return 2
        value=$(debian_mirror) && values+=("MIRROR=$value") || return 2
    fi
    values+=("CA_BUNDLE=$CA_BUNDLE")
    if [[ $keys != - ]]; then
        for key in ${keys//,/ }; do
            value=$(scripts/config-version "$key") || return 2
            values+=("$(tr '[:lower:]' '[:upper:]' <<<"$key")=$value")
        done
    fi
    values+=("INPUTS_DIGEST=$digest")
    declared=" $(grep -o '{{ *[A-Za-z_][A-Za-z0-9_]* *}}' "$definition" | tr -d '{} ' | sort -u | tr '\n' ' ')"
    for value in "${values[@]}"; do
        [[ $declared == *" ${value%%=*} "* ]] && echo "$value"
    done
    return 0
}

build_image() {
    local name=$1 images digest sif line definition base base_sif=- log arg values args=()
    images=${XDG_CACHE_HOME:-$HOME/.cache}/toppipe/images
    digest=$(image_digest "$name") || return 2
    sif=$images/$name-$digest.sif
    [[ -f $sif ]] && { echo "$sif"; return 0; }
    line=$(_image_line "$name") || return 2
    read -r _ definition base _ _ <<<"$line"
    [[ $base != - ]] && { base_sif=$(build_image "$base") || return 2; }
    [[ -f $CA_BUNDLE ]] || { echo "error: $CA_BUNDLE is missing; the image build needs this machine's CA bundle for pip and apt (install ca-certificates)" >&2; return 2; }
    values=$(image_build_args "$name" "$digest" "$base_sif") || return 2
    while IFS= read -r arg; do args+=(--build-arg "$arg"); done <<<"$values"
    mkdir -p "$images"
    log=$images/$name-$digest.log
    echo "toppipe: building image $name ($definition) as $(id -un), once; log: $log" >&2
    if ! scripts/toppipe.d/build-image "$sif" "$definition" "$base_sif" "${args[@]}" >"$log"; then
        [[ -s $log ]] && { echo "  (its log $log ends:)" >&2; tail -n 15 "$log" | sed 's/^/    /' >&2; }
        return 2
    fi
    grep '^==> .*: done in' "$log" | sed 's/^==> /  /' >&2
    echo "$sif"
}

# The inputs digest of an image, in bash: the twin of deploy.images.digest, so that the
# entry script finds (and names) the client image on a desktop with no usable Python.
# tests/unit/test_entry_digest.py keeps the two equal for every image.
#   source scripts/toppipe.d/digest.sh; image_digest client    (from the repository's root)

# A part of the digest: its length in 8 bytes (unsigned, big-endian), then the part.
_digest_length() {
    local byte i
    for ((i = 7; i >= 0; i--)); do
        byte=$((($1 >> (8 * i)) & 255))
        printf "\\$(printf %03o "$byte")"
    done
}
_digest_part_file() { _digest_length "$(wc -c <"$1")" && cat "$1"; }
_digest_part_text() { local LC_ALL=C; _digest_length "${#1}" && printf %s "$1"; }

# One line of containers/images.txt: name definition base pins versions.
_image_line() {
    awk -v name="$1" '{ sub(/#.*/, "") } $1 == name { print; found = 1; exit } END { exit !found }' containers/images.txt
}

image_digest() {
    local name=$1 line definition base pins keys key value extra=() pin
    line=$(_image_line "$name") || { echo "error: containers/images.txt: no image named '$name'" >&2; return 2; }
    read -r _ definition base pins keys <<<"$line"
    if [[ $keys != - ]]; then
        for key in $(tr ',' '\n' <<<"$keys" | sort); do
            value=$(scripts/config-version "$key") || return 2
            extra+=("$(tr '[:lower:]' '[:upper:]' <<<"$key")=$value")
        done
    fi
    if [[ $base != - ]]; then
        value=$(image_digest "$base") || return 2
        extra+=("base=$value")
    fi
    {
        _digest_part_text toppipe-image-v2
        _digest_part_file "$definition"
        if [[ $pins != - ]]; then
            for pin in ${pins//,/ }; do _digest_part_file "$pin"; done
        fi
        _digest_part_text "$(scripts/config-version debian)"
        _digest_part_text "$(uname -m)"
        for value in "${extra[@]}"; do _digest_part_text "$value"; done
    } | sha256sum | cut -c1-16
}

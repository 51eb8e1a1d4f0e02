# Which pinned environment runs toppipe's Python on this desktop: `.venv` when
# scripts/setup made it for the current pins (the entry script makes it where the pinned
# Python is), else the client image (Apptainer).
# Sourced by scripts/toppipe and scripts/toppipe-python with $repo set to the checkout.
#   TOPPIPE_ENV=venv|image forces one.

# 0 when .venv holds exactly the pins of requirements.txt (with or without the test pins).
venv_ready() {
    local stamp=$repo/.venv/.toppipe-installed wanted
    [[ -x $repo/.venv/bin/python && -f $stamp ]] || return 1
    wanted=$(<"$stamp")
    [[ $wanted == "$(cat "$repo/requirements.txt" | sha256sum | cut -d' ' -f1)" ||
        $wanted == "$(cat "$repo/requirements.txt" "$repo/requirements/test.txt" | sha256sum | cut -d' ' -f1)" ]]
}

# The pinned Python by name (python3.11) on PATH, or $PYTHON: scripts/setup can make .venv.
# Found by name, never run: on a desktop without it, no host Python is started at all.
pinned_python_here() {
    [[ -n ${PYTHON:-} ]] || command -v "python$(cd "$repo" && scripts/config-version python)" >/dev/null
}

# venv or image, or one line naming the bad value of TOPPIPE_ENV (exit 2). With --setup,
# a desktop that has the pinned Python gets .venv made (scripts/setup) rather than the image.
chosen_env() {
    local setup=0
    [[ ${1:-} == --setup ]] && setup=1
    case "${TOPPIPE_ENV:-}" in
        venv | image) echo "$TOPPIPE_ENV" ;;
        "")
            if venv_ready; then
                echo venv
            elif ((setup)) && pinned_python_here; then
                "$repo/scripts/setup" >&2 || return 2
                echo venv
            else
                echo image
            fi
            ;;
        *) echo "error: TOPPIPE_ENV=${TOPPIPE_ENV}: not an environment; use venv (scripts/setup) or image (the client image)" >&2; return 2 ;;
    esac
}

# The client image for the current inputs: <cache>/images/client-<digest>.sif. The digest is
# the twin of deploy.images.digest (digest.sh), remembered beside the image under a key of the
# inputs' sizes and times, so that an unchanged checkout does not hash them again.
client_image() {
    local images key_file key found
    images=${XDG_CACHE_HOME:-$HOME/.cache}/toppipe/images
    key_file=$images/.client-digest
    key=$(cd "$repo" && stat -c '%n %s %i %.9Y' containers/images.txt containers/*.def config/versions.yml scripts/toppipe.d/digest.sh requirements.txt requirements/*.txt && uname -m)
    if [[ -f $key_file && "$(head -n -1 "$key_file")" == "$key" ]]; then
        found=$(tail -n 1 "$key_file")
    else
        # shellcheck source=digest.sh
        found=$(cd "$repo" && source scripts/toppipe.d/digest.sh && image_digest client) || return 2
        mkdir -p "$images" && printf '%s\n%s\n' "$key" "$found" >"$key_file.$$" && mv "$key_file.$$" "$key_file"
    fi
    echo "$images/client-$found.sif"
}

# The client image at SIF, built now as this user (build.sh) where it is not there yet:
# an entry script's first use on a desktop, or the first after a change of its inputs.
client_image_built() {
    [[ -f $1 ]] && return 0
    "$repo/scripts/toppipe.d/build-image" --check "$1" || return 2
    echo "toppipe: building the client image $(basename "$1") with Apptainer (a few minutes, once)" >&2
    # shellcheck source=build.sh
    (cd "$repo" && source scripts/toppipe.d/digest.sh && source scripts/toppipe.d/build.sh && build_image client >/dev/null)
}

# The client image as a folder (<image>.d), unpacked from its SIF once. A deploy runs
# from the folder, not the SIF: processes it starts in the background (the local site's
# services) keep running after `apptainer exec` ends, where a user's SIF is a squashfuse
# mount that ends with it; and nothing is decompressed on each start (imports as fast as
# from .venv, where the SIF's squashfs took twice as long).
client_tree() {
    local sif=$1 tree=${1%.sif}.d offset tmp
    [[ -d $tree ]] && { echo "$tree"; return 0; }  # (the SIF is there: client_image_built)
    command -v unsquashfs >/dev/null || { echo "error: unpacking $sif needs unsquashfs; install squashfs-tools (Apptainer needs it too)" >&2; return 2; }
    offset=$(apptainer sif list "$sif" | awk -F'|' '$5 ~ /FS/ { split($4, range, "-"); print range[1] + 0; exit }')
    [[ -n $offset ]] || { echo "error: $sif has no root filesystem partition; delete it and build it again" >&2; return 2; }
    echo "toppipe: unpacking the client image $(basename "$sif") once, into $tree (about 20 s)" >&2
    tmp=$tree.tmp.$$
    rm -rf "$tmp"
    if ! unsquashfs -q -n -d "$tmp" -o "$offset" "$sif" >/dev/null; then
        rm -rf "$tmp"
        echo "error: unpacking $sif into $tmp failed (unsquashfs above); is the disk full?" >&2
        return 2
    fi
    mv -T "$tmp" "$tree" 2>/dev/null || rm -rf "$tmp"  # another command unpacked it meanwhile
    prune_client_trees "$tree"
    echo "$tree"
}

# The unpacked trees of other digests that no command runs from: 1.2 GB each, one more per
# change of the client's inputs. A command holds its tree's lock (.in-use, shared) for its
# whole life (run_in_image), so a tree whose lock can be taken alone is unused; it is moved
# aside under that lock, so no command finds half a tree, then removed.
prune_client_trees() {
    local keep=$1 old
    for old in "$(dirname "$keep")"/client-*.d; do
        [[ $old == "$keep" || ! -d $old ]] && continue
        flock -n -x "$old/.in-use" mv -T "$old" "$old.removed.$$" 2>/dev/null || continue
    done
    for old in "$(dirname "$keep")"/client-*.d.removed.*; do
        [[ -d $old ]] && rm -rf "$old" 2>/dev/null
    done
    return 0
}

# Run the client image's Python with ARGS: the checkout on its import path, the folders
# a deploy reads bound at the same paths (home, /tmp and the working folder are bound by
# Apptainer itself; APPTAINER_BIND adds more), and the host relay beside it (relay.sh):
# the deploy commands of the entry script, and those a service runs (the dashboard's
# actions, a notebook's session.services()), reach this desktop's own processes through it.
# This process stays the container's parent, because Apptainer's own parent process drops
# the environment, where a service's marker is (the runtime finds a service's processes by
# that marker); signals are passed on, and the exit code is the container's.
run_in_image() {
    local sif tree binds=("$repo") code=0 child signal in_use
    command -v apptainer >/dev/null || { echo "error: toppipe runs from its client image here (no .venv for the current pins) and needs Apptainer; install it, or run scripts/setup (Python $(cd "$repo" && scripts/config-version python))" >&2; return 2; }
    sif=$(client_image) || return 2
    client_image_built "$sif" || return 2
    tree=$(client_tree "$sif") || return 2
    # this tree is in use while this process lives (prune_client_trees); the services the
    # relay starts inherit the lock too, and they run from this same tree
    if ! { exec {in_use}>>"$tree/.in-use" && flock -s "$in_use" && [[ -d $tree/opt ]]; } 2>/dev/null; then
        echo "error: $tree was removed while this command started; run it again" >&2
        return 2
    fi
    [[ -n ${SSH_AUTH_SOCK:-} && -S $SSH_AUTH_SOCK ]] && binds+=("$(dirname "$SSH_AUTH_SOCK")")
    [[ -n ${XDG_RUNTIME_DIR:-} && -d $XDG_RUNTIME_DIR ]] && binds+=("$XDG_RUNTIME_DIR")
    # shellcheck source=relay.sh
    source "$repo/scripts/toppipe.d/relay.sh"
    relay_start || return 2
    trap 'relay_stop' EXIT
    binds+=("$relay_dir")  # in $TMPDIR, which need not be /tmp
    apptainer --quiet exec --bind "$(IFS=,; echo "${binds[*]}")" --env "PYTHONPATH=$repo" \
        --env "TOPPIPE_HOST_RELAY=$relay_dir" "$tree" /opt/toppipe/venv/bin/python "$@" <&0 &  # (its input stays this one's)
    child=$!
    for signal in TERM HUP QUIT USR1 USR2 $([[ -t 0 ]] || echo INT); do  # a terminal's ^C reaches the child itself
        # shellcheck disable=SC2064
        trap "kill -$signal $child 2>/dev/null" "$signal"
    done
    while true; do
        wait "$child" && return 0
        code=$?
        kill -0 "$child" 2>/dev/null || return "$code"  # ended, or only a signal interrupted wait
    done
}

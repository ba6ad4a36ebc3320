# Shared settings for the scripts. The target directory lives outside the clone so that
# every clone on a machine (and every CI run) reuses one build.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kanoclip/target}
export KANOCLIP_LOGS=${KANOCLIP_LOGS:-$CARGO_TARGET_DIR/logs}
mkdir -p "$KANOCLIP_LOGS"
# Cargo's fingerprints leave out the clone's path: a clone whose files are older than
# another clone's last build would run that clone's test binaries, with its
# CARGO_MANIFEST_DIR (and so its fixtures) baked in. When the clone changes, mark the
# crate's root changed: the crate and its tests are rebuilt, the dependencies are not.
if [ -f src/lib.rs ] && [ "$(cat "$CARGO_TARGET_DIR/clone" 2>/dev/null)" != "$(pwd -P)" ]; then
  touch src/lib.rs
  pwd -P >"$CARGO_TARGET_DIR/clone"
fi
# Two cores: keep memory use predictable.
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
# Mesa's lavapipe warns on every start without one.
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  export XDG_RUNTIME_DIR=/tmp/kanoclip-xdg-$(id -u)
  mkdir -p -m 700 "$XDG_RUNTIME_DIR"
fi
# The nightly for the threaded browser module (wasm atomics need `-Z build-std`).
export KANOCLIP_NIGHTLY=nightly-2026-05-20
# Pinned tools built once per machine (wasm-bindgen-cli).
export KANOCLIP_TOOLS=${KANOCLIP_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/kanoclip/tools}
# The pinned Python reference (scripts/requirements.txt, ~5.5 GB), built on first use by the
# scripts that need it (make-fixtures, bench-compare, bench-browser); CI never does. Sets VENV.
pyref() {
  VENV=${KANOCLIP_PYREF:-${XDG_CACHE_HOME:-$HOME/.cache}/kanoclip/pyref}
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r scripts/requirements.txt
  fi
}

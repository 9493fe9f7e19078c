#!/usr/bin/env bash
# Installs what sotto needs on Debian 12 (or newer), idempotently: quiet when all is there.
# Debian packages go through apt (as root, or with sudo); Rust comes from rustup if cargo is
# missing or too old. Safe to run again and again.
set -euo pipefail

# What the crates of the design need (measured, DESIGN.md §7):
#   cmake          builds the bundled libopus (opus crate)
#   libclang-dev   serves nokhwa's bindgen
#   libasound2-dev ALSA headers for cpal
#   nasm           makes openh264 ~3x faster; must be present before its first build
#   iproute2       `ip netns`/veth: tests/tests/two_hosts.rs builds two hosts (needs root)
#   nftables       `nft`: kernel packet loss on those hosts' link (this kernel has no netem)
PACKAGES=(build-essential pkg-config cmake libasound2-dev libclang-dev nasm curl ca-certificates git
  iproute2 nftables)
RUST_MIN="1.91"

say() { printf 'setup: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else say "need root for: $*  (run as root or install sudo)"; exit 1
  fi
}

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    > /dev/null 2> >(grep -v "^debconf: delaying" >&2)
fi

# Rust toolchain.
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
version_ok() { # is $1 >= $2 (major.minor)?
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}
have_rust=""
if command -v rustc >/dev/null 2>&1; then
  have_rust=$(rustc --version | awk '{print $2}')
fi
if [ -z "$have_rust" ] || ! version_ok "$have_rust" "$RUST_MIN"; then
  if command -v rustup >/dev/null 2>&1; then
    say "updating Rust (have ${have_rust:-none}, need >= $RUST_MIN)"
    rustup toolchain install stable --profile minimal -c rustfmt -c clippy >/dev/null
    rustup default stable >/dev/null
  else
    say "installing Rust with rustup (have ${have_rust:-none}, need >= $RUST_MIN)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
      | sh -s -- -y --profile minimal -c rustfmt -c clippy >/dev/null
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
for tool in rustfmt cargo-clippy; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then
      rustup component add "${tool#cargo-}" >/dev/null
    else
      say "$tool is missing and rustup is not available to add it"; exit 1
    fi
  fi
done

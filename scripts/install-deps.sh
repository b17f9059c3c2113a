#!/usr/bin/env bash
# Installs the system packages Roger builds and tests with (Debian/Ubuntu).
# Safe to run repeatedly: it installs only what is missing.
set -euo pipefail

PACKAGES=(
  pkg-config    # finds libopus for the opus crate
  libopus-dev   # Opus codec (linked by the opus crate)
  cmake         # some -sys crates build C code with it
  espeak-ng sox # regenerate the speech fixture (make fixture)
  iproute2      # network namespaces for the fault tests
  nftables      # faults: cuts, blocked UDP, random loss (the kernel has no netem)
  coturn        # the TURN relay of the UDP-blocked fault test
  libasound2-dev              # cpal (audio devices) links ALSA
  pulseaudio pulseaudio-utils # virtual microphone and speaker for the device tests
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "install-deps: please install: ${missing[*]}" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "install-deps: installing ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null

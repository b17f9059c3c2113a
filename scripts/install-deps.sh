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
  iptables      # the quality bench's jitter: NFQUEUE (the kernel has no nft queue)
  coturn        # the TURN relay of the UDP-blocked fault test
  libasound2-dev              # cpal (audio devices) links ALSA
  pulseaudio pulseaudio-utils # virtual microphone and speaker for the device tests
  # The desktop app (Tauri 2 on WebKitGTK) and its end-to-end tests:
  libwebkit2gtk-4.1-dev libgtk-3-dev libayatana-appindicator3-dev librsvg2-dev libxdo-dev
  xvfb xdotool       # a virtual display, and key presses for the global hotkey
  webkit2gtk-driver  # WebKitWebDriver, driven through tauri-driver
  imagemagick        # screenshots of the virtual display
  librsvg2-bin       # make icons: source.svg -> source.png
  libdbus-1-dev      # the keyring crate talks to the Secret Service over libdbus
  gnome-keyring libsecret-tools  # a Secret Service (and secret-tool) for the token test
  sway grim          # a headless Wayland compositor and its screenshots (the Wayland test)
  opus-tools         # opusdec: a standard decoder plays the history's Ogg Opus downloads
  redis-server       # the cluster tests and `make cluster`: a private Redis per test
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js builds ui/ (Vite) and runs its tests; the Tauri CLI comes from npm. Any Node
# >= 18 will do, so Debian's is installed only when there is none.
if ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
fi
node_too_old() {
  command -v node >/dev/null || return 1
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$major" -lt 20 ]
}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "install-deps: please install: ${missing[*]}" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Vite 7 needs Node 20.19+ (Debian 12's nodejs is 18).
if node_too_old; then
  echo "install-deps: Node $(node --version) is too old for the front end's build (Vite 7 needs 20.19+); install Node 20 or newer" >&2
  exit 1
fi

# tauri-driver: WebDriver for the app's end-to-end tests (about a minute to build).
if ! command -v tauri-driver >/dev/null && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/tauri-driver" ]; then
  echo "install-deps: cargo install tauri-driver" >&2
  cargo install tauri-driver --version '^2' --locked --quiet
fi

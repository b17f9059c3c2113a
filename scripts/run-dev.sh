#!/usr/bin/env bash
# `make run`: a local server with its dev channels and the echo bot, and how to talk.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/debug
DATA=.roger-dev
PORT=${ROGER_PORT:-7070}
URL="ws://127.0.0.1:$PORT/ws"
# Tokens, the dev secret and logs: readable by you only.
umask 077
mkdir -p "$DATA"
chmod 700 "$DATA"

"$BIN/roger-server" --listen "127.0.0.1:$PORT" --data-dir "$DATA" > "$DATA/server.log" 2>&1 &
SERVER=$!
cleanup() { kill $APP "$ECHO" "$SERVER" 2>/dev/null || true; wait 2>/dev/null || true; }
ECHO=""
APP=""
trap cleanup EXIT INT TERM

for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
kill -0 "$SERVER" 2>/dev/null || { cat "$DATA/server.log"; exit 1; }

token() { "$BIN/roger-server" --data-dir "$DATA" token --user "$1" --channels "$2" --ttl 7d; }
ECHO_TOKEN=$(token echo-bot echo)
YOU=$(token "${USER:-you}" general,echo)
echo "$YOU" > "$DATA/token"
token "${USER:-you}-ears" general,echo > "$DATA/token-ears"
chmod 600 "$DATA/token" "$DATA/token-ears"  # files from an older run keep their mode

"$BIN/roger-bot" --server "$URL" --token "$ECHO_TOKEN" echo --channel echo > "$DATA/echo.log" 2>&1 &
ECHO=$!

if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && [ -x "$BIN/roger" ]; then
  # Its own config dir, and no credential store: the dev server and token stay out of
  # your real Roger settings and keyring (the token is kept in a 0600 file there).
  XDG_CONFIG_HOME="$PWD/$DATA/config" ROGER_NO_KEYRING=1 \
    "$BIN/roger" --server "$URL" --token-file "$DATA/token" --channel echo > "$DATA/app.log" 2>&1 &
  APP=$!
  cat <<MSG

Roger is running, and the app is open, signed in to the "echo" channel.
  Hold F8 (anywhere, the window need not have focus) or the big button, say something,
  release: the echo bot plays it back to you. Settings has a level meter and a mic test.
  server   $URL   (log: $DATA/server.log, metrics: http://127.0.0.1:$PORT/metrics)
  app log  $DATA/app.log (rotating files in the app's log directory too)

Quitting the app (tray menu, or the window when there is no tray) stops everything;
so does Ctrl-C here.
MSG
  wait "$APP"
  exit 0
fi
if [ -z "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  echo "No display (DISPLAY/WAYLAND_DISPLAY unset): the app is not started; try xvfb-run, or use the bot below."
fi

cat <<MSG

Roger is running.
  server   $URL   (log: $DATA/server.log, metrics: http://127.0.0.1:$PORT/metrics)
  echo bot in channel "echo" plays back each transmission after you release
  your token is in $DATA/token

Radio check from another terminal (a listener, then a talker):
  $BIN/roger-bot --server $URL --token \$(cat $DATA/token-ears) listen --channel echo --out /tmp/heard.wav --seconds 8 &
  $BIN/roger-bot --server $URL --token \$(cat $DATA/token) talk --channel echo --wav tests/fixtures/speech.wav
  /tmp/heard.wav then holds your transmission followed by the echo bot's playback.

Ctrl-C stops everything.
MSG
wait "$SERVER"

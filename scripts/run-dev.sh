#!/usr/bin/env bash
# `make run`: a local server with its dev channels and the echo bot, and how to talk.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/debug
DATA=.roger-dev
PORT=${ROGER_PORT:-7070}
URL="ws://127.0.0.1:$PORT/ws"
mkdir -p "$DATA"

"$BIN/roger-server" --listen "127.0.0.1:$PORT" --data-dir "$DATA" > "$DATA/server.log" 2>&1 &
SERVER=$!
cleanup() { kill "$ECHO" "$SERVER" 2>/dev/null || true; wait 2>/dev/null || true; }
ECHO=""
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

"$BIN/roger-bot" --server "$URL" --token "$ECHO_TOKEN" echo --channel echo > "$DATA/echo.log" 2>&1 &
ECHO=$!

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

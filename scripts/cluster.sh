#!/usr/bin/env bash
# `make cluster`: a private Redis and three roger-server nodes on loopback, the echo bot
# on node b, and how to try failover by hand. See docs/cluster.md.
# Builds nothing: target/debug/roger-server and roger-bot must exist (make builds first).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/debug
REDIS_PORT=${REDIS_PORT:-6390}
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
NODES=(a b c)
declare -A PORT=([a]=7071 [b]=7072 [c]=7073)
url() { echo "ws://127.0.0.1:${PORT[$1]}/ws"; }

die() { echo "cluster.sh: $*" >&2; exit 1; }

for bin in roger-server roger-bot; do
  [ -x "$BIN/$bin" ] || die "$BIN/$bin is missing: run 'make cluster' (or cargo build --workspace --bins)"
done
for tool in redis-server redis-cli curl; do
  command -v "$tool" > /dev/null || die "$tool is not installed (apt install redis-server curl)"
done
# Someone else's Redis or an earlier run's nodes would answer our health checks.
if redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; then
  die "something already answers on port $REDIS_PORT; stop it or set REDIS_PORT"
fi
for n in "${NODES[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/${PORT[$n]}") 2>/dev/null; then
    die "port ${PORT[$n]} is in use (an earlier 'make cluster' still running?)"
  fi
done

# Tokens, the secret and logs: readable by you only.
umask 077
DIR=$(mktemp -d -t roger-cluster.XXXXXX)

PIDS=()      # everything started here, killed on exit
NODE_PIDS=()
cleanup() {
  trap - EXIT INT TERM
  # Clients first, then the nodes (they drain and leave Redis), then Redis.
  [ -z "${ECHO:-}" ] || kill "$ECHO" 2>/dev/null || true
  for p in ${NODE_PIDS[@]+"${NODE_PIDS[@]}"}; do kill "$p" 2>/dev/null || true; done
  for p in ${NODE_PIDS[@]+"${NODE_PIDS[@]}"}; do wait "$p" 2>/dev/null || true; done
  for p in ${PIDS[@]+"${PIDS[@]}"}; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "cluster stopped; logs kept in $DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Redis: loopback only, no files.
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$DIR" \
  > "$DIR/redis.log" 2>&1 &
REDIS=$!
PIDS+=("$REDIS")
echo "$REDIS" > "$DIR/redis.pid"
for _ in $(seq 100); do
  redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break
  kill -0 "$REDIS" 2>/dev/null || { cat "$DIR/redis.log"; die "redis-server did not start"; }
  sleep 0.1
done
redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG \
  || { cat "$DIR/redis.log"; die "redis-server did not answer on port $REDIS_PORT within 10 s"; }

# One JWT secret for every node (a token must be valid on any of them).
if [ -z "${ROGER_JWT_SECRET:-}" ]; then
  ROGER_JWT_SECRET=$(head -c 32 /dev/urandom | base64)
fi
export ROGER_JWT_SECRET
printf '%s\n' "$ROGER_JWT_SECRET" > "$DIR/jwt-secret"

# A node's command line (loopback media too), in NODE_ARGS.
node_args() {
  NODE_ARGS=(--listen "127.0.0.1:${PORT[$1]}" --data-dir "$DIR/$1" --media-bind 127.0.0.1:0
    --cluster "$REDIS_URL" --node-id "$1" --public-url "$(url "$1")")
}
for n in "${NODES[@]}"; do
  mkdir -p "$DIR/$n"
  node_args "$n"
  "$BIN/roger-server" "${NODE_ARGS[@]}" > "$DIR/$n.log" 2>&1 &
  NODE_PIDS+=("$!")
  echo "$!" > "$DIR/$n.pid"
done

# Each node says ok once its first heartbeat reached Redis.
i=0
for n in "${NODES[@]}"; do
  pid=${NODE_PIDS[$i]}
  i=$((i + 1))
  deadline=$((SECONDS + 15))
  until [ "$(curl -s --max-time 1 "http://127.0.0.1:${PORT[$n]}/healthz" || true)" = ok ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$DIR/$n.log" >&2
      die "node $n exited (log: $DIR/$n.log)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 20 "$DIR/$n.log" >&2
      die "node $n: /healthz did not say ok within 15 s (log: $DIR/$n.log)"
    fi
    sleep 0.1
  done
done

token() {
  "$BIN/roger-server" --data-dir "$DIR" token --user "$1" --channels "$2" --ttl 12h
}
YOU=$(token you '*')
echo "$YOU" > "$DIR/token"
token you-ears '*' > "$DIR/token-ears"
ECHO_TOKEN=$(token echo-bot echo)

"$BIN/roger-bot" --server "$(url b)" --server "$(url a)" --token "$ECHO_TOKEN" echo \
  > "$DIR/echo.log" 2>&1 &
ECHO=$!
PIDS+=("$ECHO")
echo "$ECHO" > "$DIR/echo.pid"

node_args a
RESTART_A="$BIN/roger-server ${NODE_ARGS[*]}"
ALL="--server $(url a) --server $(url b) --server $(url c)"
LISTEN_ON_C="--server $(url c) --server $(url a) --server $(url b)"
cat <<MSG

A Roger cluster is running on loopback (files in $DIR).
  redis    $REDIS_URL   (log: $DIR/redis.log)
  node a   $(url a)   (log: $DIR/a.log, metrics: http://127.0.0.1:${PORT[a]}/metrics)
  node b   $(url b)   (log: $DIR/b.log, metrics: http://127.0.0.1:${PORT[b]}/metrics)
  node c   $(url c)   (log: $DIR/c.log, metrics: http://127.0.0.1:${PORT[c]}/metrics)
  echo bot on node b, channel "echo" (log: $DIR/echo.log)

Your token (user "you", every channel, 12 h; also in $DIR/token):
  $YOU

Radio check across nodes: a listener on node c, then a talker on node a.
  $BIN/roger-bot $LISTEN_ON_C --token \$(cat $DIR/token-ears) listen --channel echo --out /tmp/heard.wav --seconds 30 &
  $BIN/roger-bot $ALL --token \$(cat $DIR/token) talk --channel echo --wav tests/fixtures/speech.wav --repeat 5

While it talks, in another terminal:
  kill -9 \$(cat $DIR/a.pid)   # node a dies: the talker moves to b or c and is heard again
  kill \$(cat $DIR/b.pid)      # node b drains: its clients (the echo bot too) move at once
Start node a again (yours to stop then: Ctrl-C here does not know it):
  ROGER_JWT_SECRET=\$(cat $DIR/jwt-secret) $RESTART_A >> $DIR/a.log 2>&1 & echo \$! > $DIR/a.pid

Ctrl-C stops everything started here.
MSG
wait

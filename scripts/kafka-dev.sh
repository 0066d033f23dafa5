#!/usr/bin/env bash
# Install, start and stop a real Kafka-protocol broker on loopback for Dunes'
# tests and demo: the Apache-2.0 `tansu` broker from crates.io, pinned, with
# SQLite storage (messages and committed offsets survive a broker restart).
#
#   scripts/kafka-dev.sh install        build tansu once into the cache
#   scripts/kafka-dev.sh start [TOPIC…] start on 127.0.0.1:$DUNES_KAFKA_PORT, create topics
#   scripts/kafka-dev.sh stop | status | topic NAME [PARTITIONS]
#
# The binary is cached outside the clone (default ~/.cache/dunes/tansu-<ver>)
# so only the first run pays for the build (12-20 minutes on 2 cores).
set -euo pipefail

TANSU_VERSION="0.6.0"
CACHE="${DUNES_CACHE:-$HOME/.cache/dunes}"
ROOT="$CACHE/tansu-$TANSU_VERSION"
BIN="$ROOT/bin/tansu"
PORT="${DUNES_KAFKA_PORT:-9092}"
BROKER="tcp://127.0.0.1:$PORT"
STATE="${DUNES_KAFKA_STATE:-$CACHE/kafka-$PORT}"
PIDFILE="$STATE/tansu.pid"
LOG="$STATE/tansu.log"
PARTITIONS="${DUNES_KAFKA_PARTITIONS:-3}"

install() {
  if [[ -x "$BIN" ]] && "$BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    return 0
  fi
  mkdir -p "$ROOT"
  # One installer at a time (CI starts one in the background while the
  # tests build; a test that needs the broker waits here for it).
  exec 9>"$CACHE/tansu-install.lock"
  flock 9
  if ! [[ -x "$BIN" ]]; then
    echo "kafka-dev: installing tansu $TANSU_VERSION into $ROOT (first run only, 12-30 min)" >&2
    cargo install tansu --version "$TANSU_VERSION" --locked --features libsql \
      --root "$ROOT" --target-dir "$CACHE/tansu-build" >&2
    rm -rf "$CACHE/tansu-build"
  fi
  flock -u 9
}

running() {
  [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

answers() {
  # A TCP connect to the listener; the topic list below proves the protocol.
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

create_topic() {
  local name="$1" parts="${2:-$PARTITIONS}" out
  if out=$("$BIN" topic create --broker "$BROKER" --partitions "$parts" "$name" 2>&1); then
    echo "kafka-dev: topic $name ($parts partitions)" >&2
  elif grep -qi "exist" <<<"$out"; then
    :
  else
    echo "kafka-dev: creating topic $name failed: $out" >&2
    return 1
  fi
}

start() {
  install
  mkdir -p "$STATE"
  if ! running && answers; then
    # Someone else's broker (or a stale one whose state dir is gone) holds
    # the port: using it would mix state silently.
    echo "kafka-dev: 127.0.0.1:$PORT is already in use by a process not started from $STATE; stop it or set DUNES_KAFKA_PORT" >&2
    return 1
  fi
  if ! running; then
    # setsid: the broker outlives the shell that started it, and a test
    # harness killing its own process group does not take the broker down.
    # tansu resolves the sqlite URL's path against its working directory.
    (cd "$STATE" && exec setsid "$BIN" broker \
      --listener-url "$BROKER" \
      --advertised-listener-url "$BROKER" \
      --storage-engine "sqlite://tansu.db" \
      >>"$LOG" 2>&1 </dev/null) &
    echo $! >"$PIDFILE"
  fi
  for _ in $(seq 1 150); do
    if answers; then break; fi
    if ! running; then
      echo "kafka-dev: broker exited; last log lines:" >&2
      tail -n 20 "$LOG" >&2
      return 1
    fi
    sleep 0.2
  done
  if ! answers; then
    echo "kafka-dev: broker did not answer on 127.0.0.1:$PORT within 30 s" >&2
    return 1
  fi
  for t in "$@"; do create_topic "$t"; done
  echo "kafka-dev: tansu $TANSU_VERSION up on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"), data $STATE)" >&2
}

stop() {
  if running; then
    local pid
    pid="$(cat "$PIDFILE")"
    # SIGTERM, then SIGKILL: tansu 0.6 can hang half-stopped after SIGTERM
    # (storage actor gone, listener still accepting). SQLite storage keeps
    # messages and offsets across a kill -9.
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$PIDFILE"
  if answers; then
    echo "kafka-dev: 127.0.0.1:$PORT still answers after stop" >&2
    return 1
  fi
}

case "${1:-}" in
  install) install; echo "$BIN" ;;
  start) shift; start "$@" ;;
  stop) stop ;;
  status)
    if running && answers; then echo "up 127.0.0.1:$PORT pid $(cat "$PIDFILE")"; else echo "down"; exit 1; fi ;;
  topic) shift; create_topic "$@" ;;
  bin) echo "$BIN" ;;
  *) echo "usage: $0 install|start [TOPIC...]|stop|status|topic NAME [PARTITIONS]|bin" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# A real ClamAV daemon (Debian's clamav-daemon) on loopback, with a signature database this
# script writes itself: the scanner the virus-scan tests and benches run against. Nothing
# is downloaded and freshclam is not used.
#
#   scripts/clamd-test-server.sh start   # installs clamav-daemon if missing, starts, waits
#   scripts/clamd-test-server.sh stop    # stops clamd by PID, removes the state
#   scripts/clamd-test-server.sh env     # prints the variables the tests read
#
# The database ($CLAMD_DIR/db, default /tmp/attachments-clamd/db):
#   test.ndb  Attachments.Test.Marker: the bytes of ATTACHMENTS_CLAMD_MARKER anywhere in a
#             file (a body signature, so the tests can cut it across a chunk boundary)
#   test.hdb  Attachments.Test.Hash: the MD5 and size of the file the test suite builds
#             from ATTACHMENTS_CLAMD_HASH_LINE repeated ATTACHMENTS_CLAMD_HASH_COUNT times
# clamd listens on 127.0.0.1:$CLAMD_PORT (default 3310) and on $CLAMD_DIR/clamd.sock, with
# StreamMaxLength $CLAMD_STREAM_MAX_MIB MiB (default 64).
set -euo pipefail

DIR=${CLAMD_DIR:-/tmp/attachments-clamd}
PORT=${CLAMD_PORT:-3310}
STREAM_MAX_MIB=${CLAMD_STREAM_MAX_MIB:-64}
MARKER=ATTACHMENTS-CLAMD-TEST-MARKER-7f3e9c1d
HASH_LINE=attachments-clamd-test-hash-signature
HASH_COUNT=100

log() { echo "clamd-test-server: $*" >&2; }

env_vars() {
    cat <<VARS
export ATTACHMENTS_CLAMD=clamd://127.0.0.1:$PORT
export ATTACHMENTS_CLAMD_SOCKET=$DIR/clamd.sock
export ATTACHMENTS_CLAMD_STREAM_MAX=$((STREAM_MAX_MIB * 1024 * 1024))
export ATTACHMENTS_CLAMD_MARKER=$MARKER
export ATTACHMENTS_CLAMD_HASH_LINE=$HASH_LINE
export ATTACHMENTS_CLAMD_HASH_COUNT=$HASH_COUNT
VARS
}

install_packages() {
    if command -v clamd >/dev/null; then
        return
    fi
    log "installing clamav-daemon"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends clamav-daemon >/dev/null
}

ping_clamd() {
    exec 3<>"/dev/tcp/127.0.0.1/$PORT" || return 1
    printf 'zPING\0' >&3
    local reply
    reply=$(head -c 5 <&3 | tr -d '\0')
    exec 3<&- 3>&-
    [ "$reply" = "PONG" ]
}

write_database() {
    mkdir -p "$DIR/db"
    local hex
    hex=$(printf '%s' "$MARKER" | od -An -tx1 -v | tr -d ' \n')
    echo "Attachments.Test.Marker:0:*:$hex" > "$DIR/db/test.ndb"
    local file=$DIR/hash-test-file
    : > "$file"
    for _ in $(seq "$HASH_COUNT"); do printf '%s\n' "$HASH_LINE" >> "$file"; done
    local md5 size
    md5=$(md5sum "$file" | cut -d' ' -f1)
    size=$(stat -c %s "$file")
    echo "$md5:$size:Attachments.Test.Hash" > "$DIR/db/test.hdb"
}

start() {
    install_packages
    if [ -f "$DIR/clamd.pid" ] && kill -0 "$(cat "$DIR/clamd.pid")" 2>/dev/null; then
        log "already running on port $PORT"
        return
    fi
    rm -rf "$DIR"
    mkdir -p "$DIR"
    write_database
    cat > "$DIR/clamd.conf" <<CONF
Foreground yes
LogFile $DIR/clamd.log
LogTime yes
PidFile $DIR/clamd.pid
DatabaseDirectory $DIR/db
LocalSocket $DIR/clamd.sock
TCPSocket $PORT
TCPAddr 127.0.0.1
StreamMaxLength ${STREAM_MAX_MIB}M
MaxScanSize ${STREAM_MAX_MIB}M
MaxFileSize ${STREAM_MAX_MIB}M
AlertExceedsMax yes
MaxThreads 8
ReadTimeout 30
CommandReadTimeout 30
SelfCheck 0
CONF
    # clamd would drop to the clamav user (Debian's default); run as whoever starts it.
    if [ "$(id -u)" = 0 ]; then
        echo "User root" >> "$DIR/clamd.conf"
    fi
    log "starting clamd with the test signatures under $DIR"
    nohup clamd --config-file="$DIR/clamd.conf" > "$DIR/clamd.out" 2>&1 &
    echo $! > "$DIR/clamd.pid"
    for _ in $(seq 150); do
        if ping_clamd 2>/dev/null; then
            log "clamd on 127.0.0.1:$PORT and $DIR/clamd.sock (StreamMaxLength ${STREAM_MAX_MIB}M); stop with: scripts/clamd-test-server.sh stop"
            return 0
        fi
        if ! kill -0 "$(cat "$DIR/clamd.pid")" 2>/dev/null; then
            break
        fi
        sleep 0.2
    done
    log "clamd did not come up; its output:"
    tail -n 30 "$DIR/clamd.out" "$DIR/clamd.log" >&2 || true
    return 1
}

stop() {
    if [ -f "$DIR/clamd.pid" ]; then
        local pid
        pid=$(cat "$DIR/clamd.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$DIR"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    env) env_vars ;;
    *)
        echo "usage: scripts/clamd-test-server.sh start|stop|env" >&2
        exit 2
        ;;
esac

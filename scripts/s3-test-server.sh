#!/usr/bin/env bash
# A single-node Ceph cluster with a RADOS Gateway on loopback: the real S3 server the
# object-store tests and benches run against. No Docker; Debian's Ceph packages.
#
#   scripts/s3-test-server.sh start   # installs the packages if missing, starts, waits
#   scripts/s3-test-server.sh stop    # stops the daemons by PID, removes the state
#   scripts/s3-test-server.sh env     # prints the variables the tests read
#
# One monitor, one OSD on `memstore` (the data lives in RAM, so nothing outlives `stop`),
# pools of size 1, and radosgw's beast frontend on 127.0.0.1:$S3_PORT (default 7480).
# Everything lives under $S3_DIR (default /tmp/attachments-s3).
set -euo pipefail

DIR=${S3_DIR:-/tmp/attachments-s3}
PORT=${S3_PORT:-7480}
MON_PORT=${S3_MON_PORT:-6789}
ACCESS_KEY=${S3_ACCESS_KEY:-attachments-test}
SECRET_KEY=${S3_SECRET_KEY:-attachments-test-secret}
BUCKET=${S3_BUCKET:-attachments-test}
CONF=$DIR/ceph.conf

log() { echo "s3-test-server: $*" >&2; }

env_vars() {
    cat <<VARS
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export ATTACHMENTS_S3_ENDPOINT=http://127.0.0.1:$PORT
export ATTACHMENTS_S3_BUCKET=$BUCKET
VARS
}

install_packages() {
    if command -v radosgw >/dev/null && command -v ceph-mon >/dev/null \
        && command -v ceph-osd >/dev/null && command -v curl >/dev/null; then
        return
    fi
    log "installing radosgw, ceph-mon, ceph-osd and curl"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends radosgw ceph-mon ceph-osd curl ca-certificates >/dev/null
}

wait_for() {
    local what=$1 tries=$2
    shift 2
    for _ in $(seq "$tries"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    log "$what did not come up; logs are in $DIR"
    tail -n 20 "$DIR"/*.log >&2 || true
    return 1
}

start() {
    install_packages
    if [ -f "$DIR/rgw.pid" ] && kill -0 "$(cat "$DIR/rgw.pid")" 2>/dev/null; then
        log "already running on port $PORT"
        return
    fi
    # Whatever an earlier, interrupted start left running would hold the ports.
    stop_daemons
    trap 'log "start failed; daemon logs are in $DIR"; tail -n 20 "$DIR/daemons.err" >&2 || true; stop_daemons' ERR
    rm -rf "$DIR"
    mkdir -p "$DIR/mon" "$DIR/osd" "$DIR/run"
    local fsid
    fsid=$(cat /proc/sys/kernel/random/uuid)
    cat >"$CONF" <<CONF
[global]
fsid = $fsid
mon host = v1:127.0.0.1:$MON_PORT
public addr = 127.0.0.1
cluster addr = 127.0.0.1
public network = 127.0.0.1/32
auth cluster required = none
auth service required = none
auth client required = none
# With authentication off the monitor client hangs unless it may use crc mode.
ms mon client mode = crc secure
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
log file = $DIR/\$name.log
pid file = $DIR/\$name.pid
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
osd objectstore = memstore
# The OSD's own CRUSH updates at start-up race its first monitor map under load (the
# monitor refuses them with 'wrong fsid' and the OSD exits); the script places it.
osd crush update on start = false
osd class update on start = false
memstore device bytes = 4294967296
osd data = $DIR/osd
mon data = $DIR/mon
# Start-up in about a second and a half instead of eighteen.
paxos propose interval = 0.05
paxos min wait = 0.01

[client.rgw.test]
rgw frontends = beast endpoint=127.0.0.1:$PORT tcp_nodelay=1
rgw data = $DIR/rgw
rgw dns name = 127.0.0.1
CONF
    mkdir -p "$DIR/rgw"
    log "starting a monitor, an OSD and radosgw under $DIR"
    monmaptool --create --add test "v1:127.0.0.1:$MON_PORT" --fsid "$fsid" "$DIR/monmap" >/dev/null
    ceph-mon -c "$CONF" --mkfs -i test --monmap "$DIR/monmap" >/dev/null
    ceph-mon -c "$CONF" -i test 2>>"$DIR/daemons.err"
    wait_for "the monitor" 100 ceph -c "$CONF" --connect-timeout 2 mon stat
    ceph -c "$CONF" osd create >/dev/null
    ceph -c "$CONF" osd crush add osd.0 1.0 root=default host=localhost >/dev/null 2>&1
    ceph-osd -c "$CONF" -i 0 --mkfs >/dev/null 2>&1
    ceph-osd -c "$CONF" -i 0 2>>"$DIR/daemons.err"
    wait_for "the OSD" 150 sh -c "ceph -c '$CONF' osd stat | grep -q '1 up'"
    radosgw -c "$CONF" -n client.rgw.test 2>>"$DIR/daemons.err"
    wait_for "radosgw" 300 curl -sf "http://127.0.0.1:$PORT/"
    radosgw-admin -c "$CONF" user create --uid=attachments --display-name=attachments \
        --access-key="$ACCESS_KEY" --secret="$SECRET_KEY" >/dev/null
    # The bucket, with a signed request (curl's SigV4; RGW wants the payload hash header).
    local status
    status=$(curl -s -o /dev/null -w '%{http_code}' -X PUT \
        --aws-sigv4 "aws:amz:us-east-1:s3" --user "$ACCESS_KEY:$SECRET_KEY" \
        -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "http://127.0.0.1:$PORT/$BUCKET")
    if [ "$status" != 200 ]; then
        log "creating bucket $BUCKET answered HTTP $status"
        return 1
    fi
    cp "$DIR/client.rgw.test.pid" "$DIR/rgw.pid"
    log "S3 on http://127.0.0.1:$PORT, bucket $BUCKET (access key $ACCESS_KEY); stop with: $0 stop"
}

# Stops the daemons by their PID files, then any daemon still running on this
# configuration (one whose PID file is gone).
stop_daemons() {
    local pids=()
    for pid_file in "$DIR"/client.rgw.test.pid "$DIR"/osd.0.pid "$DIR"/mon.test.pid; do
        [ -f "$pid_file" ] && pids+=("$(cat "$pid_file")")
    done
    pids+=($(pgrep -f -- "-c $CONF" || true))
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
}

stop() {
    stop_daemons
    rm -rf "$DIR"
    log "stopped"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
env) env_vars ;;
*)
    echo "usage: $0 start|stop|env" >&2
    exit 2
    ;;
esac

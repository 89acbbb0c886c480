#!/usr/bin/env bash
# Side by side with rustus (https://github.com/s3rius/rustus, a tus server in Rust that
# stores bytes without checking them): the same 10 MiB JPEG uploaded by the same client
# (scripts/tus-bench-client.js, plain Node http, one keep-alive connection) to rustus and
# to `attachments serve`, both on the file system in a temporary directory, one PATCH and
# 1 MiB PATCHes, without and with `Upload-Checksum: sha256`. Prints MiB/s for each from one
# run. Not run in CI: it installs rustus (cargo install, several minutes) into
# target/bench-tools. Run it with nothing else busy on the machine.
#
#   scripts/bench-rustus.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
tools=$PWD/target/bench-tools
if [ ! -x "$tools/bin/rustus" ]; then
    cargo install rustus --version 0.5.10 --locked --root "$tools"
fi
command -v node >/dev/null || { echo "needs node (Debian: nodejs)" >&2; exit 1; }
cargo build --release --features cli --bin attachments
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

# A structurally valid baseline JPEG of 10 MiB: the headers, then entropy-coded bytes
# with no 0xFF (nothing stuffed), then EOI.
python3 - "$work/bench.jpg" <<'PY'
import os, sys
head = bytes.fromhex(
    "ffd8" "ffe000104a46494600010100000100010000"
    "ffdb004300" + "01" * 64 +
    "ffc0001108030000040003012200021101031101"
    "ffc4001f0000010501010101010100000000000000000102030405060708090a0b"
    "ffda000c03010002110311003f00")
size = 10 << 20
body = bytes(b % 255 for b in os.urandom(size - len(head) - 2))
open(sys.argv[1], "wb").write(head + body + b"\xff\xd9")
PY

# rustus: file storage and file info storage in the work directory, bodies up to 16 MiB.
"$tools/bin/rustus" --host 127.0.0.1 --port 18181 --data-dir "$work/rustus" \
    --info-dir "$work/rustus" --max-body-size $((16 << 20)) --log-level ERROR \
    --hooks "" >/dev/null 2>&1 &
pids+=($!)
# attachments: the file-system store in the work directory.
target/release/attachments serve --addr 127.0.0.1:18182 --store "fs:$work/attachments" \
    >"$work/attachments.url" 2>/dev/null &
pids+=($!)
for port in 18181 18182; do
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
done

client() { node scripts/tus-bench-client.js "$1" "$work/bench.jpg" "$runs" "$2" "$3"; }
# Does rustus check checksums in this build? A wrong one must be refused (460).
sum=$(head -c 10 /dev/zero | openssl dgst -sha256 -binary | base64)
loc=$(curl -s -i -X POST http://127.0.0.1:18181/files -H 'Tus-Resumable: 1.0.0' \
    -H 'Upload-Length: 3' | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
checks=$(curl -s -o /dev/null -w '%{http_code}' -X PATCH "http://127.0.0.1:18181${loc#http://127.0.0.1:18181}" \
    -H 'Tus-Resumable: 1.0.0' -H 'Content-Type: application/offset+octet-stream' \
    -H 'Upload-Offset: 0' -H "Upload-Checksum: sha256 $sum" --data-binary abc)
echo "rustus answers a wrong sha256 checksum with $checks"
printf '%-28s %12s %12s %8s\n' "MiB/s, 10 MiB JPEG" rustus attachments ratio
for checksum in none sha256; do
    for chunk in 0 $((1 << 20)); do
        name="$([ "$chunk" = 0 ] && echo one_patch || echo patches_1MiB) $checksum"
        r=$(client http://127.0.0.1:18181/files "$chunk" "$checksum")
        a=$(client http://127.0.0.1:18182/files "$chunk" "$checksum")
        printf '%-28s %12s %12s %8s\n' "$name" "$r" "$a" "$(echo "scale=2; $a / $r" | bc)"
    done
done

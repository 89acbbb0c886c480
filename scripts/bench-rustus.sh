#!/usr/bin/env bash
# Side by side with rustus (https://github.com/s3rius/rustus, a tus server in Rust that
# stores bytes without checking them): the same 10 MiB JPEG uploaded by the same client
# (scripts/tus-bench-client.js, plain Node http, one keep-alive connection) to rustus
# (file storage; as it comes, and with --force-fsync) and to `attachments serve` (memory
# store, and fs store), one PATCH and 1 MiB PATCHes, without and with
# `Upload-Checksum: sha256`. Prints MiB/s for each from one run, and the ratios
# attachments (memory) / rustus and attachments (fs) / rustus --force-fsync. Not run in CI: it installs rustus (cargo install, several minutes) into
# target/bench-tools. Run it with nothing else busy on the machine.
#
#   scripts/bench-rustus.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
tools=$PWD/target/bench-tools
if [ ! -x "$tools/bin/rustus" ]; then
    # With its checksum verification (feature `hashers`), off by default.
    cargo install rustus --version 0.5.10 --locked --features hashers --root "$tools"
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
    "ffc00011080300040003012200021101031101"
    "ffc4001f0000010501010101010100000000000000000102030405060708090a0b"
    "ffda000c03010002110311003f00")
size = 10 << 20
body = bytes(b % 255 for b in os.urandom(size - len(head) - 2))
open(sys.argv[1], "wb").write(head + body + b"\xff\xd9")
PY

# rustus, file storage and file info storage in the work directory, bodies up to 16 MiB:
# as it comes (data left in the page cache), and with --force-fsync (each chunk written
# to disk, as attachments' fs store makes a file durable at its commit).
rustus() {
    "$tools/bin/rustus" --host 127.0.0.1 --port "$1" --data-dir "$work/rustus-$1" \
        --info-dir "$work/rustus-$1" --max-body-size $((16 << 20)) --log-level ERROR \
        "${@:2}" >/dev/null 2>&1 &
    pids+=($!)
}
rustus 18181
rustus 18183 --force-fsync true
# attachments: the memory store, and the file-system store in the work directory.
target/release/attachments serve --addr 127.0.0.1:18182 --store memory >/dev/null 2>&1 &
pids+=($!)
target/release/attachments serve --addr 127.0.0.1:18184 --store "fs:$work/attachments" \
    >/dev/null 2>&1 &
pids+=($!)
for port in 18181 18182 18183 18184; do
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
done

client() { node scripts/tus-bench-client.js "http://127.0.0.1:$1/files" "$work/bench.jpg" "$runs" "$2" "$3"; }
# Does rustus check checksums in this build? A wrong one must be refused (460).
sum=$(head -c 10 /dev/zero | openssl dgst -sha256 -binary | base64)
loc=$(curl -s -i -X POST http://127.0.0.1:18181/files -H 'Tus-Resumable: 1.0.0' \
    -H 'Upload-Length: 3' | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
checks=$(curl -s -o /dev/null -w '%{http_code}' -X PATCH "$loc" \
    -H 'Tus-Resumable: 1.0.0' -H 'Content-Type: application/offset+octet-stream' \
    -H 'Upload-Offset: 0' -H "Upload-Checksum: sha256 $sum" --data-binary abc)
echo "rustus answers a wrong sha256 checksum with $checks (460: it checks them)"
printf '%-22s %9s %9s %9s %9s %10s %10s\n' "MiB/s, 10 MiB JPEG" rustus r_fsync a_memory a_fs \
    mem/rustus fs/r_fsync
for checksum in none sha256; do
    for chunk in 0 $((1 << 20)); do
        name="$([ "$chunk" = 0 ] && echo one_patch || echo patches_1MiB) $checksum"
        r=$(client 18181 "$chunk" "$checksum")
        rf=$(client 18183 "$chunk" "$checksum")
        am=$(client 18182 "$chunk" "$checksum")
        af=$(client 18184 "$chunk" "$checksum")
        printf '%-22s %9s %9s %9s %9s %10s %10s\n' "$name" "$r" "$rf" "$am" "$af" \
            "$(echo "scale=2; $am / $r" | bc)" "$(echo "scale=2; $af / $rf" | bc)"
    done
done

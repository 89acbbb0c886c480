#!/usr/bin/env bash
# The IETF resumable-upload flow (draft -10, interop version 8) with curl, against a
# server at $1, for file $2, with bearer token $3. tests/tus_clients.rs runs it.
#   1. creation with Upload-Complete: ?1, cut off by curl's time limit midway: the 104
#      (Upload Resumption Supported) has given the upload's address;
#   2. offset retrieval (HEAD): Upload-Offset, Upload-Complete: ?0;
#   3. the rest appended (PATCH, application/partial-upload, Upload-Complete: ?1): 200;
#   4. the attachment read back and compared.
set -euo pipefail
server=$1 file=$2 token=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
size=$(stat -c %s "$file")
fail() { echo "FAILED: $*" >&2; exit 1; }

# 1. Sent at 1 MB/s and stopped after 2 s: the body is cut off well before its end.
curl -sS -i -X POST "$server/uploads" -H "Authorization: Bearer $token" \
    -H 'Upload-Draft-Interop-Version: 8' -H 'Upload-Complete: ?1' \
    -H 'Content-Type: image/jpeg' -H 'Content-Disposition: attachment; filename="curl.jpg"' \
    -H 'Expect:' --data-binary @"$file" --limit-rate 1M --max-time 2 \
    >"$work/create" 2>"$work/create.err" || true
grep -q '^HTTP/1.1 104 Upload Resumption Supported' "$work/create" \
    || fail "no 104 in: $(cat "$work/create")"
grep -qi '^upload-draft-interop-version: 8' "$work/create" || fail "104 without the interop version"
location=$(grep -i '^location:' "$work/create" | head -1 | tr -d '\r' | cut -d' ' -f2)
[ -n "$location" ] || fail "104 without a location"
if grep -q '^HTTP/1.1 20' "$work/create"; then fail "the creation was not cut off"; fi

# 2. Offset retrieval (the server saves what came as soon as it sees the cut).
offset=""
for _ in $(seq 1 50); do
    curl -sS -I "$location" -H "Authorization: Bearer $token" >"$work/head"
    grep -q '^HTTP/1.1 204' "$work/head" || fail "HEAD: $(cat "$work/head")"
    grep -qi '^upload-complete: ?0' "$work/head" || fail "HEAD says complete: $(cat "$work/head")"
    grep -qi "^upload-length: $size" "$work/head" || fail "HEAD without the length: $(cat "$work/head")"
    offset=$(grep -i '^upload-offset:' "$work/head" | tr -d '\r' | cut -d' ' -f2)
    sleep 0.1
    again=$(curl -sS -I "$location" -H "Authorization: Bearer $token" | grep -i '^upload-offset:' | tr -d '\r' | cut -d' ' -f2)
    [ "$again" = "$offset" ] && break
done
[ "$offset" -gt 0 ] && [ "$offset" -lt "$size" ] || fail "offset $offset of $size"

# 3. The rest.
tail -c +$((offset + 1)) "$file" >"$work/rest"
status=$(curl -sS -o "$work/done" -w '%{http_code}' -X PATCH "$location" \
    -H "Authorization: Bearer $token" -H "Upload-Offset: $offset" -H 'Upload-Complete: ?1' \
    -H 'Content-Type: application/partial-upload' --data-binary @"$work/rest")
[ "$status" = 200 ] || fail "PATCH answered $status: $(cat "$work/done")"
grep -q '"filename":"curl.jpg"' "$work/done" || fail "answer: $(cat "$work/done")"

# 4. The attachment, whole.
id=${location##*/}
curl -sS -o "$work/back" "$server/v1/attachments/$id/content" -H "Authorization: Bearer $token"
cmp -s "$work/back" "$file" || fail "the attachment differs from the file"
echo "DONE $location offset-at-cut $offset"

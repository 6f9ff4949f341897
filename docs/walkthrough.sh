#!/usr/bin/env bash
# The API walkthrough of docs/api.md, runnable: bash docs/walkthrough.sh (from the repository root,
# with `npm start` running). test/walkthrough.test.ts runs it against the local stack and checks that
# docs/api.md shows exactly these lines.
set -euo pipefail

B=${B:-http://127.0.0.1:3000}                   # the local gateway `npm start` serves
JWT=${JWT:?set JWT to the PULSEVAULT_DEV_TOKEN that npm start printed}
field() { node -p "JSON.parse(require('fs').readFileSync(0, 'utf8')).$1"; }   # one field of a JSON answer
CLIP=$(mktemp --suffix .mp4); trap 'rm -f "$CLIP"' EXIT
ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=640x360:rate=25:duration=4 -f lavfi -i sine=duration=4 \
  -c:v libx264 -pix_fmt yuv420p -c:a aac -shortest "$CLIP"
SIZE=$(stat -c %s "$CLIP")

# 1. Create the upload (tus creation). Location is uploads/<id>, relative to the URL you called, or
#    <PUBLIC_URL>/uploads/<id> where PUBLIC_URL is set (as on Kubernetes): the id is its last segment.
UPLOAD=$(curl -fsS -i -X POST $B/uploads -H "Authorization: Bearer $JWT" -H 'Tus-Resumable: 1.0.0' -H "Upload-Length: $SIZE" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
UPLOAD_ID=${UPLOAD##*/}
echo "upload: $UPLOAD"

# 2. Send the first 100 000 bytes (any number of PATCHes; each continues at the server's offset).
head -c 100000 "$CLIP" | curl -fsS -X PATCH $B/uploads/$UPLOAD_ID -H 'Tus-Resumable: 1.0.0' \
  -H 'Upload-Offset: 0' -H 'Content-Type: application/offset+octet-stream' --data-binary @- -w 'PATCH %{http_code}\n'

# 3. After a dropped connection, ask where the server stands (HEAD) and continue from there.
OFFSET=$(curl -fsS -I $B/uploads/$UPLOAD_ID -H 'Tus-Resumable: 1.0.0' | tr -d '\r' | awk 'tolower($1)=="upload-offset:"{print $2}')
echo "server has $OFFSET of $SIZE bytes"
tail -c +$((OFFSET + 1)) "$CLIP" | curl -fsS -X PATCH $B/uploads/$UPLOAD_ID -H 'Tus-Resumable: 1.0.0' \
  -H "Upload-Offset: $OFFSET" -H 'Content-Type: application/offset+octet-stream' --data-binary @- -w 'PATCH %{http_code}\n'

# 4. Finalize: probe, move, sha256, meta.json, audit entry, transcode job. The answer names the video.
FINALIZED=$(curl -fsS $B/uploads/finalize -H "Authorization: Bearer $JWT" -H 'Content-Type: application/json' \
  -d "{\"uploadId\":\"$UPLOAD_ID\",\"filename\":\"clip.mp4\",\"metadata\":{\"title\":\"My Video\"}}")
echo "$FINALIZED"
VIDEO_ID=$(echo "$FINALIZED" | field videoId)
echo "$FINALIZED" | field checksum; sha256sum "$CLIP"   # the same hex

# 5. Sign a URL for one path of the video (Bearer JWT of its owner or an admin).
sign() { curl -fsS $B/media/sign -H "Authorization: Bearer $JWT" -H 'Content-Type: application/json' -d "{\"videoId\":\"$VIDEO_ID\",\"path\":\"$1\"}" | field url; }
ORIGINAL_URL=$B$(sign original.mp4)
curl -fsS -r 0-1023 "$ORIGINAL_URL" -o /dev/null -w 'original.mp4 bytes 0-1023: %{http_code}\n'   # 206

# 6. A token for any path of the video opens its metadata. Watch it go queued → transcoding (progress) → transcoded.
METADATA_URL="$B/media/videos/$VIDEO_ID/metadata?token=${ORIGINAL_URL#*token=}"
for _ in $(seq 1 240); do
  STATUS=$(curl -fsS "$METADATA_URL" | field status)
  [ "$STATUS" = "${SHOWN:-}" ] || echo "status: $STATUS"; SHOWN=$STATUS
  [ "$STATUS" = transcoded ] && break
  [ "$STATUS" = failed ] && { echo 'transcode failed' >&2; exit 1; }
  sleep 1
done
curl -fsS "$METADATA_URL"; echo

# 7. Play the ladder: signing the HLS master grants all of hls/, and every playlist it serves carries the token.
MASTER_URL=$B$(sign hls/master.m3u8)
curl -fsS "$MASTER_URL" | grep -m1 'm3u8?token='
DASH_URL=$B$(sign hls/manifest.mpd)   # DASH: the same segments, another manifest in hls/
curl -fsS "$DASH_URL" | grep -m1 -o 'media="[^"]*token='
ls "${MEDIA_ROOT:-data}/videos/$VIDEO_ID/hls/"   # on disk: master.m3u8, 240p.m3u8 …, audio.m3u8, manifest.mpd, init_*.m4s, seg_*.m4s, poster.jpg
curl -fsS "$B/media/videos/$VIDEO_ID/renditions?token=${MASTER_URL#*token=}"; echo

# 8. A token opens its own scope only: the hls/ token does not open the original.
curl -sS "$B/media/videos/$VIDEO_ID/original.mp4?token=${MASTER_URL#*token=}" -w ' %{http_code}\n'   # 403 out_of_scope

# 9. Edit: quote the metadata's ETag in If-Match (a stale one gets 412, none 428). Then delete, with a reason code.
ETAG=$(curl -fsS -o /dev/null -D - "$METADATA_URL" -H "Authorization: Bearer $JWT" | tr -d '\r' | awk 'tolower($1)=="etag:"{print $2}')
curl -fsS -X PATCH "$B/media/videos/$VIDEO_ID" -H "Authorization: Bearer $JWT" -H 'Content-Type: application/json' \
  -H "If-Match: $ETAG" -d '{"title":"My edited video"}'; echo
curl -fsS -X DELETE "$B/media/videos/$VIDEO_ID?reason=duplicate" -H "Authorization: Bearer $JWT"; echo   # the tombstone
curl -sS "$MASTER_URL" -w ' %{http_code}\n'   # 410 video_deleted: every token of the video, those issued before too

# 10. Operator side (same MEDIA_ROOT and Redis as npm start): the audit chain and the transcode queue.
npx pulsevault audit verify | tail -n 1
npx pulsevault requeue --dry-run

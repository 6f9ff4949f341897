/**
 * POST / with a transcode job (JSON, from the queue connector) → transcodes the
 * video and answers 200 when the ladder is published (or was already), 409 when
 * another transcoder holds the video's lease, an error otherwise. The connector
 * acks, waits or retries from the status.
 */
import { createAuditLog } from '../../shared/audit/client.js';
import { BadRequestError, MethodNotAllowedError } from '../../shared/platform/errors.js';
import { defineFunction } from '../../shared/platform/handler-contract.js';
import { readJsonBody, sendJson } from '../../shared/platform/http.js';
import { MediaStore } from '../../shared/video/store.js';
import { attachMirror } from '../../shared/mirror/attach.js';
import { createRedis } from '../../shared/platform/redis.js';
import { checkEncoders, transcodeVideo } from '../../shared/transcode/transcoder.js';
import { ffmpegDiesWithParent } from '../../shared/transcode/ffmpeg-run.js';
import { registerQueueMetrics, transcodeJobSchema } from '../../shared/transcode/queue.js';
import { openVideoKeys } from '../../shared/keys/video-keys.js';

export default defineFunction(async ({ config, log, onShutdown }) => {
  const codecs = await checkEncoders(config);
  const redis = createRedis(config, { name: 'transcoder', log });
  const audit = createAuditLog(config, redis, log);
  const store = new MediaStore(config.videoDir, redis, await openVideoKeys(config));
  const mirror = attachMirror(store, redis, config, log);
  registerQueueMetrics(redis);
  onShutdown(async () => {
    await mirror?.close();
    await audit.close();
    redis.disconnect();
  });
  if (!ffmpegDiesWithParent()) log.warn('setpriv (util-linux) not found: an ffmpeg orphaned by a killed transcoder runs on until it ends');
  log.info({ codecs, renditions: config.transcode.renditions, preset: config.transcode.ffmpegPreset }, 'transcoder ready');

  return async (req, res, ctx) => {
    ctx.route = 'POST /';
    if (req.method !== 'POST') throw new MethodNotAllowedError(['POST']);
    const parsed = transcodeJobSchema.safeParse(await readJsonBody(req));
    if (!parsed.success) throw new BadRequestError('body must be a transcode job {videoId, attempt, enqueuedAt, traceId}', 'invalid_job');
    const result = await transcodeVideo({ config, redis, store, audit, log: ctx.log }, codecs, parsed.data, ctx.requestId);
    sendJson(res, 200, { videoId: parsed.data.videoId, ...result });
  };
});

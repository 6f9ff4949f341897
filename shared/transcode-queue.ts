/**
 * The transcode queue (Redis Streams). INTERIM: enqueue only; the consumer group,
 * retries, dead-lettering and the connector land with the transcoding issue.
 */
import { randomUUID } from 'node:crypto';
import type { Redis } from './redis.js';

export const TRANSCODE_STREAM = 'pulsevault:transcode:jobs';

export interface TranscodeJob {
  videoId: string;
  attempt: number;
  enqueuedAt: string;
  traceId: string;
  traceparent?: string | null;
}

export async function enqueueTranscode(redis: Redis, videoId: string, traceparent: string | null = null): Promise<TranscodeJob> {
  const job: TranscodeJob = { videoId, attempt: 1, enqueuedAt: new Date().toISOString(), traceId: randomUUID(), traceparent };
  await redis.xadd(TRANSCODE_STREAM, '*', 'job', JSON.stringify(job));
  return job;
}

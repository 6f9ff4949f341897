/**
 * Webhook events and their outbox. An event is recorded in the same step that makes its state
 * change durable: `recordEvent` runs inside the media store's update, under the video's lock,
 * and fsyncs `<outbox>/<eventId>.json` before meta.json is written. A crash between the two
 * leaves an event whose change a retry makes again, and the retry writes the same file: the id is
 * derived from the video, the event type and the `updatedAt` of the meta.json the change starts
 * from, which is the same on every retry until meta.json is written. The sender
 * (./sender.ts) delivers from the outbox and removes an event once every endpoint has it.
 *
 * The payload carries ids, status, renditions and times only: never the title, description,
 * filename, user metadata or owner (no PHI leaves the vault by webhook).
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import { mkdir } from 'node:fs/promises';
import { writeFileAtomic } from '../platform/atomic-file.js';
import type { VideoMeta } from '../video/store.js';

export const EVENT_TYPES = ['video.finalized', 'video.preview_ready', 'video.ready', 'video.failed', 'video.updated', 'video.deleted'] as const;
export type EventType = (typeof EVENT_TYPES)[number];

export function isEventType(value: unknown): value is EventType {
  return (EVENT_TYPES as readonly unknown[]).includes(value);
}

export interface WebhookEvent {
  /** Also the `webhook-id` of every delivery of it: receivers deduplicate by it. */
  id: string;
  type: EventType;
  timestamp: string;
  data: {
    videoId: string;
    status: string;
    renditions: string[];
    uploadedAt: string;
    transcodedAt: string | null;
    deletedAt: string | null;
  };
}

/** Where the outbox lives: beside the videos on the media volume (`<MEDIA_ROOT>/webhooks/outbox`). */
export function webhooksDir(videoDir: string): string {
  return path.join(path.dirname(videoDir), 'webhooks');
}
export const outboxDir = (videoDir: string) => path.join(webhooksDir(videoDir), 'outbox');

const EVENT_ID = /^msg_[0-9a-f]{32}$/;
export const isEventId = (id: string) => EVENT_ID.test(id);

/** The event for `next` (the meta.json about to be written), its id fixed by `previous`. */
export function eventFor(type: EventType, previous: VideoMeta, next: VideoMeta): WebhookEvent {
  const id = `msg_${createHash('sha256').update(`${next.videoId}\n${type}\n${previous.updatedAt}`).digest('hex').slice(0, 32)}`;
  return {
    id,
    type,
    timestamp: new Date().toISOString(),
    data: {
      videoId: next.videoId,
      status: next.status,
      renditions: [...(next.renditions ?? [])],
      uploadedAt: next.uploadedAt,
      transcodedAt: next.transcodedAt ?? null,
      deletedAt: next.deletion?.deletedAt ?? null,
    },
  };
}

/** Durable before the caller goes on (fsynced file and directory). */
export async function recordEvent(videoDir: string, event: WebhookEvent): Promise<void> {
  const dir = outboxDir(videoDir);
  await mkdir(dir, { recursive: true });
  await writeFileAtomic(path.join(dir, `${event.id}.json`), JSON.stringify(event));
}

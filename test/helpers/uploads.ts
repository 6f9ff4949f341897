/** Upload test helpers: a real tus client (tus-js-client in Node), raw tus requests, finalize calls. */
import { createHash } from 'node:crypto';
import * as tus from 'tus-js-client';

export const TUS = { 'Tus-Resumable': '1.0.0' };

export function sha256(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

export interface TusUploadOptions {
  chunkSize?: number;
  retryDelays?: number[] | null;
  onBeforeRequest?: (req: tus.HttpRequest) => void;
  onAfterResponse?: (req: tus.HttpRequest, res: tus.HttpResponse) => void;
}

/** Upload `data` with tus-js-client (in small chunks by default); resolves with the upload URL. */
export function tusUpload(endpoint: string, data: Buffer, o: TusUploadOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(data, {
      endpoint,
      chunkSize: o.chunkSize ?? 64 * 1024,
      retryDelays: o.retryDelays === undefined ? [0, 200, 500, 1000, 2000] : o.retryDelays,
      storeFingerprintForResuming: false,
      metadata: { filetype: 'video/mp4' },
      ...(o.onBeforeRequest ? { onBeforeRequest: o.onBeforeRequest } : {}),
      ...(o.onAfterResponse ? { onAfterResponse: o.onAfterResponse } : {}),
      onError: reject,
      onSuccess: () => resolve(upload.url!),
    });
    upload.start();
  });
}

export const uploadIdOf = (url: string) => new URL(url).pathname.split('/').pop()!;

/** POST /uploads (creation); resolves with the absolute upload URL (Location resolved as a client does). */
export async function createUpload(endpoint: string, length: number, headers: Record<string, string> = {}): Promise<string> {
  const res = await fetch(endpoint, { method: 'POST', headers: { ...TUS, 'Upload-Length': String(length), ...headers } });
  if (res.status !== 201) throw new Error(`creation answered ${res.status}: ${await res.text()}`);
  return new URL(res.headers.get('location')!, endpoint).toString();
}

export function patch(url: string, offset: number, body: Buffer | ReadableStream, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<Response> {
  return fetch(url, {
    method: 'PATCH',
    ...(signal ? { signal } : {}),
    headers: { ...TUS, 'Upload-Offset': String(offset), 'Content-Type': 'application/offset+octet-stream', ...headers },
    body,
    ...(body instanceof ReadableStream ? { duplex: 'half' } : {}),
  } as RequestInit);
}

/** A PATCH whose body the test feeds piece by piece, as a slow or stalled client would. */
export function streamingPatch(url: string, offset: number) {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  const body = new ReadableStream<Uint8Array>({ start: (c) => void (controller = c) });
  const response = patch(url, offset, body).then(
    (r) => r,
    () => null, // the connection was closed on us
  );
  return {
    response,
    send: (bytes: Buffer) => controller.enqueue(new Uint8Array(bytes)),
    end: () => {
      try {
        controller.close();
      } catch {
        // already closed or errored by the server side
      }
    },
  };
}

export async function offsetOf(url: string): Promise<number> {
  const res = await fetch(url, { method: 'HEAD', headers: TUS });
  if (res.status !== 200) throw new Error(`HEAD answered ${res.status}`);
  return Number(res.headers.get('upload-offset'));
}

export async function finalize(base: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${base}/uploads/finalize`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

/**
 * ffmpeg's view of an encrypted original: a loopback HTTP server (127.0.0.1, a port of the
 * kernel's choosing, one unguessable path) that serves the decrypted original with ranges, so
 * ffmpeg and ffprobe seek in it as in a file (their http input asks with Range) and no plaintext is
 * ever written to disk. One server per transcode step, closed with it. The URL is not logged: it
 * is a capability for the life of the step, though it carries no key.
 */
import { randomBytes } from 'node:crypto';
import { open, stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { VideoKeys } from '../keys/video-keys.js';
import { validatorsOf } from '../delivery/media-response.js';
import { isEncryptedFile } from './chunked.js';
import { encryptedOriginal, sendEncryptedFile } from './original-response.js';

export interface PlaintextSource {
  /** What to give ffmpeg as its input: the file itself, or the loopback URL of its plaintext. */
  source: string;
  close(): Promise<void>;
}

/** `folder` is the video's directory, `original` meta.json's name of the original in it. */
export async function openPlaintextSource(keys: VideoKeys | null, folder: string, videoId: string, original: string): Promise<PlaintextSource> {
  const file = path.join(folder, original);
  if (!(await isEncryptedFile(file))) return { source: file, close: async () => {} };
  const secret = `/${randomBytes(16).toString('hex')}/${original}`;
  const server = createServer((req, res) => {
    const refuse = (status: number) => void res.writeHead(status, { 'Content-Length': '0' }).end();
    if (req.url !== secret || (req.method !== 'GET' && req.method !== 'HEAD')) return refuse(404);
    void (async () => {
      const handle = await open(file, 'r');
      const validators = validatorsOf(await stat(file, { bigint: true }));
      const enc = await encryptedOriginal(keys, videoId, original, handle).catch(async (err: unknown) => {
        await handle.close();
        throw err;
      });
      await sendEncryptedFile(req, res, enc!, validators, { 'Content-Type': 'application/octet-stream' }, {});
    })().catch(() => (res.headersSent ? res.destroy() : refuse(500)));
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    source: `http://127.0.0.1:${port}${secret}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

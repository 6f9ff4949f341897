/**
 * ffmpeg's view of sealed files (./chunked.ts format): the encrypted original, a fanned-out
 * transcode's sealed chunks. One loopback HTTP server per transcode step (127.0.0.1, a port of the
 * kernel's choosing) serves each file's plaintext with ranges under one unguessable prefix, so
 * ffmpeg and ffprobe seek in it as in a file (their http input asks with Range) and no plaintext is
 * ever written to disk. A clear file is handed to ffmpeg by its path. The server starts with the
 * step's first sealed file and is closed with the step.
 *
 * The URLs are not logged: each is a capability for the life of the step, though it carries no key.
 * ffmpeg names its inputs in its error lines, so those pass through hideLoopbackUrls first.
 */
import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { deriveKey, type KeyPurpose, type VideoKeys } from '../keys/video-keys.js';
import { validatorsOf } from '../delivery/media-response.js';
import { EncryptedFile, isEncryptedFile, MissingKeyError } from './chunked.js';
import { sendEncryptedFile } from './original-response.js';

/** What a served file is sealed as: its key's purpose. */
export type SealedSourcePurpose = Extract<KeyPurpose, 'original' | 'chunk'>;

const LOOPBACK_URL = /http:\/\/127\.0\.0\.1:\d+\/[0-9a-f]{32}\//g;

/** `text` (ffmpeg's stderr) with every loopback URL's capability part replaced. */
export const hideLoopbackUrls = (text: string) => text.replace(LOOPBACK_URL, '<loopback>/');

export class PlaintextSources {
  private readonly prefix = `/${randomBytes(16).toString('hex')}/`;
  /** By URL path: the sealed file and the key it opens with. */
  private readonly served = new Map<string, { file: string; key: Buffer }>();
  private listening: Promise<{ server: Server; port: number }> | null = null;

  constructor(
    private readonly keys: VideoKeys | null,
    private readonly videoId: string,
  ) {}

  /**
   * What to give ffmpeg for `file`: its path when it is clear (a vault without a KEK, a file
   * written before it had one), else the loopback URL of its plaintext, decrypted under the
   * video's key for `purpose`. Files are served by their name, which must be unique in the step.
   */
  async source(file: string, purpose: SealedSourcePurpose): Promise<string> {
    if (!(await isEncryptedFile(file))) return file;
    const dataKey = this.keys ? await this.keys.dataKey(this.videoId) : null;
    if (!dataKey) throw new MissingKeyError();
    const urlPath = `${this.prefix}${encodeURIComponent(path.basename(file))}`;
    const known = this.served.get(urlPath);
    if (known && known.file !== file) throw new Error('two sealed files of one name in one step');
    this.served.set(urlPath, { file, key: deriveKey(dataKey, purpose) });
    const { port } = await (this.listening ??= this.listen());
    return `http://127.0.0.1:${port}${urlPath}`;
  }

  async close(): Promise<void> {
    if (!this.listening) return;
    const { server } = await this.listening;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private async listen(): Promise<{ server: Server; port: number }> {
    const server = createServer((req, res) => this.answer(req, res));
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
    return { server, port: (server.address() as AddressInfo).port };
  }

  private answer(req: IncomingMessage, res: ServerResponse): void {
    const refuse = (status: number) => void res.writeHead(status, { 'Content-Length': '0' }).end();
    const sealed = this.served.get(req.url ?? '');
    if (!sealed || (req.method !== 'GET' && req.method !== 'HEAD')) return refuse(404);
    void (async () => {
      const handle = await open(sealed.file, 'r');
      const opened = await Promise.all([handle.stat({ bigint: true }), EncryptedFile.open(handle, sealed.key, this.videoId)]).catch(async (err: unknown) => {
        await handle.close();
        throw err;
      });
      const [stat, enc] = opened;
      await sendEncryptedFile(req, res, enc, validatorsOf(stat), { 'Content-Type': 'application/octet-stream' }, {});
    })().catch(() => (res.headersSent ? res.destroy() : refuse(500)));
  }
}

/**
 * Reference for the upload benchmark: the least an HTTP upload endpoint can do.
 * `PATCH /<name>` with `Upload-Offset: n` pipes the body into `<dir>/<name>` at
 * offset n (no auth, no locking, no metadata, no fsync — neither does the tus
 * file store per chunk). Prints `{"port":N}` once listening.
 */
import { createWriteStream } from 'node:fs';
import { createServer } from 'node:http';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';

const dir = process.argv[2]!;

const server = createServer((req, res) => {
  const name = path.basename(req.url ?? '/upload');
  const offset = Number(req.headers['upload-offset'] ?? 0);
  const file = createWriteStream(path.join(dir, name), { flags: offset === 0 ? 'w' : 'r+', start: offset });
  pipeline(req, file).then(
    () => res.writeHead(204).end(),
    (err: Error) => res.writeHead(500).end(err.message),
  );
});
server.listen(0, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ port: (server.address() as { port: number }).port })}\n`));
process.once('SIGTERM', () => server.close(() => process.exit(0)));

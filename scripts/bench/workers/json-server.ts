/**
 * Reference for the sign benchmark: a bare Node HTTP server that reads the
 * request body and answers every request with the same JSON (argv[2]), as
 * sendJson does. Prints `{"port":N}` once listening.
 */
import { createServer } from 'node:http';

const body = process.argv[2]!;

const server = createServer((req, res) => {
  req.resume();
  req.once('end', () => res.writeHead(200, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(body) }).end(body));
});
server.listen(0, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ port: (server.address() as { port: number }).port })}\n`));
process.once('SIGTERM', () => server.close(() => process.exit(0)));

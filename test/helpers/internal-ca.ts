/**
 * An internal CA made for one test (openssl), and an HTTPS JWKS server on loopback whose
 * certificate it signed: what an on-prem identity provider looks like to PulseVault.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { exportJWK, generateKeyPair } from 'jose';

export interface InternalCa {
  /** The CA certificate (PEM): what a site puts in k8s/ca-bundle.pem. */
  caPem: string;
  caFile: string;
  /** The server's key and its chain, leaf then CA (as IdPs send it: hence "self-signed certificate in certificate chain"). */
  serverKey: string;
  serverChain: string;
  dir: string;
  remove(): void;
}

const openssl = (dir: string, args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });

export function makeInternalCa(): InternalCa {
  const dir = mkdtempSync(path.join(tmpdir(), 'pv-ca-'));
  openssl(dir, ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=PulseVault Test Internal CA']);
  openssl(dir, ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'idp.key', '-out', 'idp.csr', '-subj', '/CN=idp.test']);
  writeFileSync(path.join(dir, 'idp.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n');
  openssl(dir, ['x509', '-req', '-in', 'idp.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'idp.pem', '-days', '2', '-extfile', 'idp.ext']);
  const caPem = readFileSync(path.join(dir, 'ca.pem'), 'utf8');
  return {
    caPem,
    caFile: path.join(dir, 'ca.pem'),
    serverKey: readFileSync(path.join(dir, 'idp.key'), 'utf8'),
    serverChain: readFileSync(path.join(dir, 'idp.pem'), 'utf8') + caPem,
    dir,
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

export interface HttpsJwks {
  url: string;
  privateKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
  close(): Promise<void>;
}

/** An RS256 JWKS (kid k1) at https://127.0.0.1:<port>/jwks.json, certificate signed by `ca`. */
export async function startHttpsJwks(ca: InternalCa): Promise<HttpsJwks> {
  const pair = await generateKeyPair('RS256');
  const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
  const server: Server = createServer({ key: ca.serverKey, cert: ca.serverChain }, (_req, res) =>
    res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ keys: [jwk] })),
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`,
    privateKey: pair.privateKey,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

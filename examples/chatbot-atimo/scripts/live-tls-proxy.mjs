#!/usr/bin/env node
// A TLS front for `relay local`'s live hub, for page development: the `aws-amplify` Events
// client always connects with wss://, and `relay local` speaks plain ws://. Run this next to
// `relay local`, point LIVE_EVENT_ENDPOINT at https://localhost:9443/event, and the page's
// code is the same as on AWS. It terminates TLS and pipes bytes to the relay, so HTTP publish
// (/event) and the WebSocket (/event/realtime) both pass through unchanged.
//
//   node scripts/live-tls-proxy.mjs [--listen 127.0.0.1:9443] [--target 127.0.0.1:9000]
//                                   [--cert cert.pem --key key.pem]
//
// Without --cert/--key it makes a self-signed certificate for localhost and 127.0.0.1 (with
// the `openssl` command) that lives as long as the process. A browser must trust it: use
// mkcert's (`mkcert localhost 127.0.0.1`, then --cert/--key), or open https://localhost:9443/health
// once and accept the warning. The tests import `startTlsProxy` and `selfSignedCertificate`.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';

/**
 * A self-signed certificate (P-256, one day) for `localhost` and `127.0.0.1`, made with the
 * openssl command. Fails with how to install it when it is missing.
 * @returns {{cert: string, key: string}} PEM text
 */
export function selfSignedCertificate() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'live-tls-'));
  try {
    const keyFile = path.join(dir, 'key.pem');
    const certFile = path.join(dir, 'cert.pem');
    try {
      execFileSync('openssl', [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-keyout', keyFile, '-out', certFile, '-days', '1', '-subj', '/CN=localhost',
        '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
      ], { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (err) {
      const missing = /** @type {NodeJS.ErrnoException} */ (err).code === 'ENOENT';
      throw new Error(missing
        ? 'the openssl command is missing: install OpenSSL (e.g. `apt-get install openssl`), or pass --cert and --key (e.g. made by mkcert)'
        : `openssl could not make a certificate: ${String(/** @type {{stderr?: Buffer}} */ (err).stderr ?? err).trim()}`);
    }
    return { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Listens with TLS on host:port (port 0: any free one) and pipes each connection to the
 * target's plain TCP port.
 * @param {{cert: string, key: string, targetPort: number, targetHost?: string, port?: number, host?: string}} options
 */
export async function startTlsProxy(options) {
  const targetHost = options.targetHost ?? '127.0.0.1';
  /** @type {Set<net.Socket>} */
  const sockets = new Set();
  const server = tls.createServer({ cert: options.cert, key: options.key }, (client) => {
    const upstream = net.connect(options.targetPort, targetHost);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      // Either side failing ends both: the client sees a closed connection and reconnects.
      socket.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  // A failed TLS handshake (an untrusting browser) is the client's business, not a crash.
  server.on('tlsClientError', () => {});
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => resolve(undefined));
  });
  const { port } = /** @type {net.AddressInfo} */ (server.address());
  return {
    port,
    /** The Event API endpoint to give the page: https://localhost:<port>/event */
    endpoint: `https://localhost:${port}/event`,
    close: () => new Promise((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.close(() => resolve(undefined));
    }),
  };
}

/** `host:port` → [host, port]. */
function hostPort(/** @type {string} */ value, /** @type {string} */ flag) {
  const match = /^(.+):(\d{1,5})$/.exec(value);
  if (!match || Number(match[2]) > 65535) throw new Error(`${flag} ${value}: expected host:port, e.g. 127.0.0.1:9443`);
  return /** @type {[string, number]} */ ([match[1], Number(match[2])]);
}

async function main() {
  const args = process.argv.slice(2);
  /** @type {Record<string, string>} */
  const flags = { '--listen': '127.0.0.1:9443', '--target': '127.0.0.1:9000' };
  for (let i = 0; i < args.length; i += 2) {
    if (!['--listen', '--target', '--cert', '--key'].includes(args[i]) || args[i + 1] === undefined) {
      throw new Error(`unknown or incomplete option ${args[i]}; usage: live-tls-proxy.mjs [--listen host:port] [--target host:port] [--cert cert.pem --key key.pem]`);
    }
    flags[args[i]] = args[i + 1];
  }
  if (Boolean(flags['--cert']) !== Boolean(flags['--key'])) throw new Error('give both --cert and --key, or neither');
  const [host, port] = hostPort(flags['--listen'], '--listen');
  const [targetHost, targetPort] = hostPort(flags['--target'], '--target');
  const pem = flags['--cert']
    ? { cert: readFileSync(flags['--cert'], 'utf8'), key: readFileSync(flags['--key'], 'utf8') }
    : selfSignedCertificate();
  const proxy = await startTlsProxy({ ...pem, host, port, targetHost, targetPort });
  console.log(`live-tls-proxy: https://${host}:${proxy.port} → http://${targetHost}:${targetPort} (relay local)`);
  console.log(`live-tls-proxy: set LIVE_EVENT_ENDPOINT=https://localhost:${proxy.port}/event in the app`);
  if (!flags['--cert']) {
    console.log(`live-tls-proxy: self-signed certificate: open https://localhost:${proxy.port}/health once and accept it, or use mkcert with --cert/--key`);
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    console.error(`live-tls-proxy: ${err.message}`);
    process.exit(1);
  });
}

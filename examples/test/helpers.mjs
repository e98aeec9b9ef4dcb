// Test helpers: secrets, free ports, a recording HTTP server, the real `relay local` child
// process, a moto SQS server, a capturing logger. Every child process started here is killed
// at exit.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..');

/** A fresh `whsec_` secret of 32 random bytes. */
export function newSecret() {
  return `whsec_${randomBytes(32).toString('base64')}`;
}

/** A TCP port free right now on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {net.AddressInfo} */ (server.address());
      server.close(() => resolve(port));
    });
  });
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `predicate` until it is truthy; fails with `message` after `timeoutMs`. */
export async function waitFor(predicate, { timeoutMs = 15_000, intervalMs = 25, message = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${message}`);
    await sleep(intervalMs);
  }
}

/**
 * An HTTP server on 127.0.0.1 (port 0 unless given) that records each request and answers with
 * `respond(req, body)` → {status, headers?, body?} (default 204).
 */
export async function startServer(respond = () => ({ status: 204 }), port = 0) {
  /** @type {{method: string, url: string, headers: http.IncomingHttpHeaders, body: string, at: number}[]} */
  const requests = [];
  const sockets = new Set();
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const record = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body, at: Date.now() };
      requests.push(record);
      try {
        const out = (await respond(record, requests.length)) ?? { status: 204 };
        if (out.hang) return; // never answer (timeout tests)
        res.writeHead(out.status, out.headers ?? (out.body ? { 'content-type': 'application/json' } : {}));
        res.end(out.body ?? '');
      } catch (err) {
        res.writeHead(500);
        res.end(String(err));
      }
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  const { port: actual } = /** @type {net.AddressInfo} */ (server.address());
  return {
    port: actual,
    url: `http://127.0.0.1:${actual}`,
    requests,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve(undefined));
      }),
  };
}

/** A logger that keeps every line, for assertions (and prints nothing). */
export function captureLogger() {
  /** @type {{level: string, text: string}[]} */
  const lines = [];
  const at = (level) => (...args) => lines.push({ level, text: args.map(String).join(' ') });
  return {
    lines,
    logger: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') },
    text: () => lines.map((l) => `${l.level}: ${l.text}`).join('\n'),
  };
}

// ---------------------------------------------------------------------------------------------
// The real relay (`relay local`), from RELAY_BIN or <repo>/target/debug/relay.

export const relayBin = process.env.RELAY_BIN || path.join(repoRoot, 'target', 'debug', 'relay');

/** Fails (never skips) when the binary is missing. */
export function requireRelayBin() {
  if (!existsSync(relayBin)) {
    throw new Error(
      `the relay binary is missing at ${relayBin}: build it with \`cargo build -p relay-cli\` ` +
        '(or point RELAY_BIN at it)',
    );
  }
  return relayBin;
}

/** @type {Set<import('node:child_process').ChildProcess>} */
const children = new Set();
function killChildren() {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}
process.on('exit', killChildren);
// The test runner stops a file that runs too long with a signal: take the relays along.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    killChildren();
    process.exit(signal === 'SIGINT' ? 130 : 143);
  });
}

/**
 * Starts `relay local` on 127.0.0.1:port and resolves once it prints its listening line.
 * `env` adds variables after the developer's relay settings are cleared (e.g. QUEUE_URL).
 * `liveTokenSecrets` turns on the live hub (`--live-token-secrets`).
 * @param {{port: number, webhookUrl: string, webhookSecret: string, ingestSecret: string,
 *   retrySchedule?: string, deliveryTimeoutMs?: number, liveTokenSecrets?: string,
 *   env?: Record<string, string>}} options
 */
export async function startRelay(options) {
  const bin = requireRelayBin();
  const args = [
    'local',
    '--listen', `127.0.0.1:${options.port}`,
    '--webhook-url', options.webhookUrl,
    '--webhook-secrets', options.webhookSecret,
    '--ingest-secrets', options.ingestSecret,
    '--retry-schedule', options.retrySchedule ?? '1,1,1',
    '--delivery-timeout-ms', String(options.deliveryTimeoutMs ?? 2000),
  ];
  if (options.liveTokenSecrets) args.push('--live-token-secrets', options.liveTokenSecrets);
  // A clean environment: nothing from the developer's shell leaks into the relay's config.
  const env = { ...process.env };
  for (const name of ['INGEST_SECRETS', 'WEBHOOK_URL', 'WEBHOOK_SECRETS', 'RETRY_SCHEDULE',
    'DELIVERY_TIMEOUT_MS', 'QUEUE_URL', 'AWS_ENDPOINT_URL_SQS', 'DEAD_LETTER_QUEUE_URL',
    'DEAD_LETTER_STATUSES', 'QR_TTL_SECONDS', 'CHAT_ID_KEY', 'LIVE_TOKEN_SECRETS', 'LIVE_NAMESPACE']) delete env[name];
  env.RUST_LOG ??= 'info';
  Object.assign(env, options.env ?? {});

  const child = spawn(bin, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let output = '';
  const onData = (chunk) => {
    output += chunk.toString();
    if (output.length > 200_000) output = output.slice(-100_000);
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  exited.then(() => children.delete(child));

  const ready = `listening on http://127.0.0.1:${options.port}`;
  const started = await Promise.race([
    waitFor(() => output.includes(ready), { timeoutMs: 30_000, message: `"${ready}" from relay local` }).then(() => true),
    exited.then(() => false),
  ]).catch((err) => {
    child.kill('SIGKILL');
    throw new Error(`${err.message}\n--- relay output ---\n${output}`);
  });
  if (!started) throw new Error(`relay local exited before listening:\n--- relay output ---\n${output}`);

  return {
    url: `http://127.0.0.1:${options.port}`,
    eventsUrl: `http://127.0.0.1:${options.port}/events`,
    child,
    output: () => output,
    /** SIGTERM, then SIGKILL after 5 s; resolves when it has exited. */
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
    /** Dies at once (no graceful shutdown), like a crash. */
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// moto, a real SQS-protocol server, from MOTO_SERVER or <repo>/.venv/bin/moto_server.

export const motoBin = process.env.MOTO_SERVER || path.join(repoRoot, '.venv', 'bin', 'moto_server');

/**
 * Starts moto_server on a free loopback port and resolves once it answers. Fails (never skips)
 * when it is not installed.
 */
export async function startMoto() {
  if (!existsSync(motoBin)) {
    throw new Error(
      `moto_server is missing at ${motoBin}: run \`make tools\` (or scripts/tools.sh), which installs ` +
        'the pinned moto[server] into .venv (or point MOTO_SERVER at one)',
    );
  }
  const port = await freePort();
  const child = spawn(motoBin, ['-H', '127.0.0.1', '-p', String(port)], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.add(child);
  let output = '';
  child.stderr.on('data', (chunk) => {
    output = (output + chunk.toString()).slice(-20_000);
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  exited.then(() => children.delete(child));
  const endpoint = `http://127.0.0.1:${port}`;
  let gone = false;
  exited.then(() => { gone = true; });
  await waitFor(async () => {
    if (gone) throw new Error(`moto_server exited before answering:\n${output}`);
    return fetch(`${endpoint}/moto-api/`).then(() => true, () => false);
  }, { timeoutMs: 60_000, intervalMs: 100, message: `moto_server on ${endpoint}` });
  return {
    endpoint,
    port,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/**
 * One SQS action against `endpoint` in SQS's JSON protocol (what the AWS SDKs speak), with
 * plain fetch. moto routes a request to a service by the credential scope of its
 * Authorization header, so a placeholder one naming `sqs` is sent (moto does not check it).
 * @param {string} endpoint
 * @param {string} action e.g. "CreateQueue"
 * @param {object} input
 */
export async function sqs(endpoint, action, input) {
  const response = await fetch(`${endpoint}/`, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-amz-json-1.0',
      'x-amz-target': `AmazonSQS.${action}`,
      authorization: 'AWS4-HMAC-SHA256 Credential=test/20250101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0',
    },
    body: JSON.stringify(input),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`SQS ${action} answered ${response.status}: ${text.slice(0, 500)}`);
  return text ? JSON.parse(text) : {};
}

/**
 * A TCP proxy on 127.0.0.1 in front of `target` that can be switched off: while off, open
 * connections are destroyed and new ones are closed as soon as they arrive.
 * @param {number} targetPort
 */
export async function startSwitchableProxy(targetPort) {
  /** @type {Set<net.Socket>} */
  const sockets = new Set();
  let on = true;
  let refused = 0;
  const server = net.createServer((client) => {
    if (!on) {
      refused += 1;
      client.destroy();
      return;
    }
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const { port } = /** @type {net.AddressInfo} */ (server.address());
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    get on() {
      return on;
    },
    /** Connections refused while off. */
    get refused() {
      return refused;
    },
    off() {
      on = false;
      for (const socket of sockets) socket.destroy();
    },
    resume() {
      on = true;
    },
    close: () => new Promise((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.close(() => resolve(undefined));
    }),
  };
}

/**
 * Serves a web-standard `(Request) => Promise<Response>` handler (the Next.js route) over
 * node:http, as Vercel would, so the relay can deliver to it.
 * @param {(request: Request) => Promise<Response>} handler
 */
export async function startRouteServer(handler) {
  const server = http.createServer(async (req, res) => {
    try {
      const chunks = [];
      for await (const chunk of req) chunks.push(chunk);
      const headers = new Headers();
      for (const [name, value] of Object.entries(req.headers)) {
        if (Array.isArray(value)) for (const v of value) headers.append(name, v);
        else if (value !== undefined) headers.set(name, value);
      }
      const request = new Request(`http://127.0.0.1${req.url}`, {
        method: req.method,
        headers,
        body: req.method === 'GET' || req.method === 'HEAD' ? undefined : Buffer.concat(chunks),
      });
      const response = await handler(request);
      res.writeHead(response.status, Object.fromEntries(response.headers));
      res.end(Buffer.from(await response.arrayBuffer()));
    } catch (err) {
      res.writeHead(500);
      res.end(String(err));
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = /** @type {net.AddressInfo} */ (server.address());
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise((resolve) => {
      server.closeAllConnections?.();
      server.close(() => resolve(undefined));
    }),
  };
}

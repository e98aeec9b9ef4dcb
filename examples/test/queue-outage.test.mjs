// The queue goes away mid-run and comes back. A real SQS-protocol server (moto) sits behind a
// TCP proxy the test switches off and on; the real relay (`relay local` with QUEUE_URL) uses
// it through the proxy; the example sender feeds the relay; a receiver verifies each delivery
// with the npm `standardwebhooks` package.
//
//   sender ──► relay local (ingest + dispatcher) ──► receiver
//                   │  ▲
//                   ▼  │ SQS JSON protocol
//              switchable TCP proxy ──► moto_server (FIFO queue + FIFO DLQ)
//
// While the proxy is off: ingest answers 503 (nothing stored), the sender keeps its backlog.
// Afterwards: every accepted event is delivered, in order per chat, duplicates only with the
// same webhook-id, and the queue drains. moto missing is a failure that says how to install it.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { createSender } from '../chat-whatsapp/relay-sender.mjs';
import {
  captureLogger,
  freePort,
  newSecret,
  requireRelayBin,
  sleep,
  sqs,
  startMoto,
  startRelay,
  startServer,
  startSwitchableProxy,
  waitFor,
} from './helpers.mjs';

const INGEST = newSecret();
const WEBHOOK = newSecret();
const EVENTS = 60;
const CHATS = 6;
/** Events sent before the proxy goes off, and while it is off. */
const BEFORE_OUTAGE = 20;
const DURING_OUTAGE = 20;
/** How long the queue stays away (a scenario setting; no assertion depends on it). */
const OUTAGE_MS = 4000;

/** @type {Array<() => unknown>} */
const stops = [];
after(async () => {
  for (const stop of stops.splice(0).reverse()) {
    try {
      await stop();
    } catch {
      // keep stopping the rest
    }
  }
});

/** The number of a chat's peer (a test number, never logged by the sender or the relay). */
const peer = (chat) => `55119000000${String(chat).padStart(2, '0')}@c.us`;

/** Stored messages (visible + in flight), as SQS reports them. */
async function depth(endpoint, queueUrl) {
  const { Attributes: a } = await sqs(endpoint, 'GetQueueAttributes', {
    QueueUrl: queueUrl,
    AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
  });
  return Number(a.ApproximateNumberOfMessages) + Number(a.ApproximateNumberOfMessagesNotVisible);
}

describe('the queue goes away mid-run and comes back (moto behind a switchable proxy)', { timeout: 180_000 }, () => {
  it(`${EVENTS} events over ${CHATS} chats: 503 while it is gone, backlog kept, everything accepted delivered in order`, async () => {
    const started = Date.now();
    requireRelayBin();
    const moto = await startMoto();
    stops.push(moto.stop);

    // A FIFO queue and its FIFO DLQ, wired as the template wires them (high safety net).
    const dlqUrl = (await sqs(moto.endpoint, 'CreateQueue', { QueueName: 'outage-dlq.fifo', Attributes: { FifoQueue: 'true' } })).QueueUrl;
    const { Attributes: { QueueArn: dlqArn } } = await sqs(moto.endpoint, 'GetQueueAttributes', { QueueUrl: dlqUrl, AttributeNames: ['QueueArn'] });
    const queueUrl = (await sqs(moto.endpoint, 'CreateQueue', {
      QueueName: 'outage.fifo',
      Attributes: {
        FifoQueue: 'true',
        ContentBasedDeduplication: 'false',
        // Short, so a delivered message whose delete was lost in the outage comes back soon.
        VisibilityTimeout: '10',
        // (relay local runs its batches without a deadline on a queue this short, and says so.)
        RedrivePolicy: JSON.stringify({ deadLetterTargetArn: dlqArn, maxReceiveCount: 300 }),
      },
    })).QueueUrl;

    const proxy = await startSwitchableProxy(moto.port);
    stops.push(proxy.close);
    const proxiedQueueUrl = queueUrl.replace(moto.endpoint, proxy.url);
    assert.notEqual(proxiedQueueUrl, queueUrl, `moto's queue URL ${queueUrl} is on ${moto.endpoint}`);

    /** @type {Map<string, {body: string, count: number}>} */
    const deliveries = new Map();
    /** @type {{id: string, chat: number, seq: number}[]} */
    const arrivals = [];
    let unverified = 0;
    let changedBodies = 0;
    const receiver = await startServer((record) => {
      try {
        new Webhook(WEBHOOK).verify(record.body, /** @type {any} */ (record.headers));
      } catch {
        unverified += 1;
        return { status: 401 };
      }
      const id = String(record.headers['webhook-id']);
      const seen = deliveries.get(id);
      if (seen) {
        seen.count += 1;
        if (record.body !== seen.body) changedBodies += 1;
      } else {
        deliveries.set(id, { body: record.body, count: 1 });
      }
      const { chat, seq } = JSON.parse(JSON.parse(record.body).data.message.id);
      arrivals.push({ id, chat, seq });
      return { status: 204 };
    });
    stops.push(receiver.close);

    const relay = await startRelay({
      port: await freePort(),
      webhookUrl: `${receiver.url}/hook`,
      webhookSecret: WEBHOOK,
      ingestSecret: INGEST,
      env: {
        QUEUE_URL: proxiedQueueUrl,
        DEAD_LETTER_QUEUE_URL: dlqUrl.replace(moto.endpoint, proxy.url),
        // A real queue outlives the relay, so the key naming its chats must be stable (and set).
        CHAT_ID_KEY: 'queue-outage-test-chat-id-key-0123456789',
        AWS_ENDPOINT_URL_SQS: proxy.url,
        AWS_ACCESS_KEY_ID: 'test',
        AWS_SECRET_ACCESS_KEY: 'test',
        AWS_REGION: 'us-east-1',
      },
    });
    stops.push(relay.stop);
    const relayLog = () => `\n--- relay output (tail) ---\n${relay.output().slice(-4000)}`;

    // Every answer the sender gets, with when its request started and ended.
    /** @type {{status: number, start: number, end: number}[]} */
    const answers = [];
    const log = captureLogger();
    const sender = createSender({
      url: relay.eventsUrl,
      secret: INGEST,
      retryBaseDelayMs: 100,
      retryMaxDelayMs: 500,
      maxRetryAfterMs: 500, // the relay's Retry-After is 5 s: shortened to keep the test quick
      timeoutMs: 10_000,
      logger: log.logger,
      fetch: async (input, init) => {
        const start = Date.now();
        const response = await fetch(input, init);
        answers.push({ status: response.status, start, end: Date.now() });
        return response;
      },
    });
    stops.push(() => sender.close());

    /** @type {Promise<import('../chat-whatsapp/relay-sender.mjs').SendResult>[]} */
    const results = [];
    const perChat = new Array(CHATS).fill(0);
    const send = (i) => {
      const chat = i % CHATS;
      const seq = perChat[chat]++;
      results.push(sender.send('message', {
        message: {
          // The test's bookkeeping travels in the message id; the text is a fixed string.
          id: JSON.stringify({ chat, seq }),
          from: peer(chat),
          to: '5511999990000@c.us',
          content: 'hello',
          type: 'text',
          direction: 'incoming',
          timestamp: new Date().toISOString(),
          status: 'received',
        },
      }, { id: `message-outage-${i}` }));
    };

    // 1. The queue is there: the first events go through. Halfway through them, while events
    //    are being stored and delivered, the queue goes away (sends, receives and deletes in
    //    flight are cut).
    for (let i = 0; i < BEFORE_OUTAGE; i++) send(i);
    await waitFor(() => answers.filter((a) => a.status === 202).length >= BEFORE_OUTAGE / 2, { timeoutMs: 60_000, message: `${BEFORE_OUTAGE / 2} events accepted${relayLog()}` });

    // 2. The queue goes away. Events keep coming; ingest cannot store them.
    proxy.off();
    const offAt = Date.now();
    for (let i = BEFORE_OUTAGE; i < BEFORE_OUTAGE + DURING_OUTAGE; i++) {
      send(i);
      await sleep(OUTAGE_MS / DURING_OUTAGE / 2);
    }
    await waitFor(() => answers.some((a) => a.status === 503 && a.start >= offAt), { timeoutMs: 30_000, message: `a 503 from ingest while the queue is gone${relayLog()}` });
    await sleep(Math.max(0, offAt + OUTAGE_MS - Date.now()));
    const backlogDuringOutage = sender.pending;
    assert.ok(backlogDuringOutage > 0, 'the sender keeps undelivered events while the queue is gone');
    assert.ok(proxy.refused > 0, 'the relay tried to reach the queue while it was gone');

    // 3. The queue comes back; more events arrive.
    const onAt = Date.now();
    proxy.resume();
    for (let i = BEFORE_OUTAGE + DURING_OUTAGE; i < EVENTS; i++) send(i);

    const outcomes = await Promise.all(results);
    const refused = outcomes.filter((o) => !o.ok);
    assert.deepEqual(refused, [], `every event accepted in the end${relayLog()}`);
    assert.ok(outcomes.every((o) => o.status === 202));
    await waitFor(() => deliveries.size >= EVENTS, { timeoutMs: 60_000, message: `${EVENTS} distinct deliveries (have ${deliveries.size})${relayLog()}` });
    // Messages whose delete was lost in the outage come back after their visibility timeout
    // and are delivered again: wait until the queue holds nothing, so they are counted.
    await waitFor(async () => (await depth(moto.endpoint, queueUrl)) === 0, { timeoutMs: 60_000, message: `the queue drained${relayLog()}` });
    await sleep(500);

    // What ingest answered while the queue was gone.
    const fiveOhThrees = answers.filter((a) => a.status === 503);
    assert.ok(fiveOhThrees.length > 0, 'ingest answered 503 while the queue was gone');
    for (const a of fiveOhThrees) {
      assert.ok(a.end >= offAt && a.start <= onAt, `a 503 outside the outage: ${JSON.stringify({ ...a, offAt, onAt })}`);
    }
    assert.ok(answers.every((a) => a.status === 202 || a.status === 503), `only 202 and 503: ${[...new Set(answers.map((a) => a.status))]}`);

    // Everything accepted was delivered, verified, once per id at least, in order per chat.
    assert.equal(unverified, 0, 'every delivery verifies with the webhook secret');
    assert.equal(changedBodies, 0, 'a redelivery carries the same body as the first delivery of its id');
    assert.deepEqual([...deliveries.keys()].sort(), Array.from({ length: EVENTS }, (_, i) => `message-outage-${i}`).sort());
    for (let chat = 0; chat < CHATS; chat++) {
      const firsts = [];
      const seen = new Set();
      for (const a of arrivals) {
        if (a.chat !== chat || seen.has(a.id)) continue;
        seen.add(a.id);
        firsts.push(a.seq);
      }
      assert.deepEqual(firsts, Array.from({ length: perChat[chat] }, (_, s) => s), `chat ${chat} in order`);
    }
    const duplicates = arrivals.length - deliveries.size;
    assert.equal(await depth(moto.endpoint, dlqUrl), 0, 'nothing dead-lettered');

    // Nothing personal in the sender's log.
    assert.doesNotMatch(log.text(), /55119000000|hello/);

    console.log(
      `queue outage: events=${EVENTS} chats=${CHATS} accepted=${outcomes.length} delivered=${deliveries.size} ` +
        `503s_seen=${fiveOhThrees.length} sender_backlog_during_outage=${backlogDuringOutage} ` +
        `proxy_connections_refused=${proxy.refused} duplicates=${duplicates} dlq=0 ` +
        `wall_time_s=${((Date.now() - started) / 1000).toFixed(1)}`,
    );
  });
});

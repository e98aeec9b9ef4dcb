// POST /api/webhook/chat-whatsapp: events from chat-whatsapp, delivered by the chat webhook
// relay (signed with Standard Webhooks, retried until acknowledged).
//
// 1. Verifies the signature over the raw body with WEBHOOK_SECRET (the relay's WEBHOOK secret,
//    not the ingest one): 401 when missing, wrong or older than 5 minutes.
// 2. Claims the `webhook-id` atomically: a redelivery of a handled id gets 200 "duplicate", a
//    copy arriving while the first is still being handled gets 409 (the relay retries later).
// 3. Parses the envelope into the typed union of ./types and calls the handler for its type.
// 4. Answers 200 JSON and keeps the claim; 500 when a handler throws, releasing the claim so
//    the relay's retry is handled; 503 when a handler is still running after its deadline
//    (the claim holds meanwhile). Bodies over the size limit get 413, unsigned ones 401 unread.
//
// Replace the `handlers` below with your app's logic (update the UI state, store messages…).
// To share the duplicate memory across instances, pass a Redis / Vercel KV store to
// createHandler (see README.md). Keep handlers short: the relay waits 5 s per attempt.

import { createHandler } from "./handler";
import type { EventHandlers } from "./types";

const handlers: EventHandlers = {
  async status(event) {
    const { connected, authenticated, error, reason, clientInfo } = event.data;
    console.info("[webhook] status", {
      session: event.session ?? "default",
      connected,
      authenticated,
      error,
      reason,
      // Whether the account is known, not which: its wid is a phone number, its pushname a name.
      clientInfo: clientInfo ? "present" : "absent",
    });
    // e.g. await db.whatsappSession.upsert({ connected, authenticated, ... })
  },
  async qr(event) {
    // event.data.qr is a PNG data URL (a login credential): show it, never log it.
    console.info("[webhook] qr", { session: event.session ?? "default", available: event.data.available });
    // e.g. await db.whatsappSession.update({ qr: event.data.qr, qrAvailable: event.data.available })
  },
  async message(event, { webhookId }) {
    const { direction, type, status, timestamp } = event.data.message;
    // The text (event.data.message.content) and the numbers are personal data: store, don't log.
    console.info("[webhook] message", { webhookId, direction, type, status, timestamp });
    // e.g. await db.message.upsert({ where: { id }, create: { ...event.data.message } })
  },
};

// Built once per server instance: the in-memory duplicate store lives as long as it does.
const handle = createHandler({ handlers });

export async function POST(request: Request): Promise<Response> {
  return handle(request);
}

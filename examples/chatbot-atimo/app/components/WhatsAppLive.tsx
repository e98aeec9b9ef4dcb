"use client";
// The operator's live panel for one WhatsApp session: connection status, the QR to scan
// while it is valid, and messages as they arrive. Render it next to the state the page
// loaded from the app (no replay: see lib/whatsapp-live.ts).

import { useWhatsAppLive } from "./useWhatsAppLive";
import type { LiveStatus } from "../../lib/whatsapp-live";

const LABELS: Record<LiveStatus, string> = {
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting… (events meanwhile are reloaded from the app)",
  refused: "refused, retrying",
  unauthenticated: "sign in to see live updates",
  closed: "off",
};

export function WhatsAppLive({ session, onResume }: { session: string; onResume?: () => void }) {
  const live = useWhatsAppLive(session, { onResume });
  return (
    <section aria-label={`WhatsApp session ${session}`}>
      <p role="status">
        Live updates: {LABELS[live.status]}
        {live.error && live.status !== "live" ? ` (${live.error})` : null}
        {live.whatsapp ? ` · WhatsApp ${live.whatsapp.connected ? "connected" : "disconnected"}` : null}
      </p>
      {live.qr ? (
        // A data: URL from the relay, checked to be an image; it disappears when it expires.
        <img src={live.qr.image} alt="Scan this code with WhatsApp to sign in" width={264} height={264} />
      ) : null}
      <ul>
        {live.messages.map((message) => (
          <li key={message.id}>
            <strong>{message.direction === "incoming" ? message.from : "sent"}</strong>: {message.content}
          </li>
        ))}
      </ul>
    </section>
  );
}

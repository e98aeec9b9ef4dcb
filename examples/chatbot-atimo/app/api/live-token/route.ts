// The live-token route of the Next.js App Router: after the app's own login, mints the token
// the page's `useWhatsAppLive(session)` connects with. See token.ts for what it holds.
//
// Configure: LIVE_TOKEN_SECRET (one of the relay's LIVE_TOKEN_SECRETS), LIVE_EVENT_ENDPOINT
// (the Event API's HTTP endpoint), LIVE_NAMESPACE (optional, the relay's, default "relay").

import { createLiveTokenHandler, type LiveViewer } from "./token";

// A token must never be served from a cache.
export const dynamic = "force-dynamic";

/**
 * THE APP'S SESSION CHECK GOES HERE. Return the signed-in user and the WhatsApp sessions they
 * may watch, or null. As shipped it lets nobody in (401), so the route is safe to deploy
 * before it is wired. With Auth.js, for example:
 *
 *   const session = await auth();
 *   if (!session?.user?.id) return null;
 *   return { user: session.user.id, sessions: await whatsappSessionsOf(session.user.id) };
 */
async function authenticate(_request: Request): Promise<LiveViewer | null> {
  return null;
}

export async function GET(request: Request): Promise<Response> {
  // Read on each request, like the webhook route's secret, so a rotation needs no rebuild.
  const handle = createLiveTokenHandler({
    secret: process.env.LIVE_TOKEN_SECRET,
    endpoint: process.env.LIVE_EVENT_ENDPOINT,
    namespace: process.env.LIVE_NAMESPACE,
    authenticate,
  });
  return handle(request);
}

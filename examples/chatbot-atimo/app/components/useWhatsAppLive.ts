"use client";
// React binding of lib/whatsapp-live.ts: one live store per session, started while the
// component is mounted, read with useSyncExternalStore.

import { useEffect, useRef, useState, useSyncExternalStore } from "react";
import {
  createWhatsAppLive,
  type WhatsAppLiveOptions,
  type WhatsAppLiveState,
} from "../../lib/whatsapp-live";

/**
 * The live state of `session`: connection status, the QR while valid, new messages.
 * Load the current state from the app first (no replay: only what happens after the page
 * subscribed arrives here), and again in `options.onResume` after a dropped connection or a refused token.
 * `options` are read when the session changes.
 */
export function useWhatsAppLive(session: string, options?: WhatsAppLiveOptions): WhatsAppLiveState {
  const optionsRef = useRef(options);
  optionsRef.current = options;
  const [store, setStore] = useState(() => createWhatsAppLive(session, options));
  const [storeSession, setStoreSession] = useState(session);
  if (storeSession !== session) {
    // A new session: a new store (the render-time update React recommends over an effect).
    setStoreSession(session);
    setStore(createWhatsAppLive(session, optionsRef.current));
  }
  useEffect(() => {
    // Under React's StrictMode this runs start, close, start: the store allows it.
    store.start();
    return () => store.close();
  }, [store]);
  return useSyncExternalStore(store.subscribe, store.getSnapshot, store.getSnapshot);
}

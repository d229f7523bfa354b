// Points @fal-ai/client's realtime connections at a livegen server.
//
// The client opens wss://fal.run/<app>/realtime with the global WebSocket and
// fetches tokens from https://rest.fal.ai/tokens/; it has no option for either
// host. useLivegen() swaps in a WebSocket class that sends fal.run's URLs to
// livegen, and returns a fetch for fal.config() that sends token requests there
// (livegen reads their fields from the query: its HTTP parser takes no bodies).
export function useLivegen(livegenUrl) {
  const url = new URL(livegenUrl);
  const root = url.origin + url.pathname.replace(/\/$/, "");
  const NativeWebSocket = globalThis.WebSocket;
  if (NativeWebSocket === undefined) {
    throw new Error("no global WebSocket: use Node 22+ or run Node 20 with --experimental-websocket");
  }
  globalThis.WebSocket = class LivegenWebSocket extends NativeWebSocket {
    constructor(target, protocols) {
      super(String(target).replace(/^wss:\/\/fal\.run\//, `${root.replace(/^http/, "ws")}/`), protocols);
    }
  };
  const nativeFetch = globalThis.fetch;
  return (target, { body, ...init } = {}) => {
    if (String(target) !== "https://rest.fal.ai/tokens/") {
      return nativeFetch(target, { body, ...init });
    }
    const { allowed_apps, token_expiration } = JSON.parse(body);
    const query = new URLSearchParams({ allowed_apps: allowed_apps.join(","), token_expiration });
    return nativeFetch(`${root}/tokens/?${query}`, init);
  };
}

// Preloaded (node --import) before every script the tests run under Node: nothing
// they run may leave this machine, so every URL that is not loopback is refused.
// A broken redirect then fails the test here instead of reaching fal.ai.
const loopback = /^(ws|wss|http|https):\/\/(127\.0\.0\.1|localhost)[:/]/;

function refuseRemote(url) {
  if (!loopback.test(String(url))) throw new Error(`the tests refuse to reach ${url}`);
}

const NativeWebSocket = globalThis.WebSocket;
globalThis.WebSocket = class LoopbackWebSocket extends NativeWebSocket {
  constructor(url, protocols) {
    refuseRemote(url);
    super(url, protocols);
  }
};

const nativeFetch = globalThis.fetch;
globalThis.fetch = async (url, init) => {
  refuseRemote(url);
  return nativeFetch(url, init);
};

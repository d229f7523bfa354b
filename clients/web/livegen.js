/**
 * livegen.js: a browser client for livegen's WebSocket protocol (version 1).
 *
 * One {@link LivegenClient} holds one session. It opens the WebSocket, starts the
 * session, and keeps it: when the connection drops it reconnects with
 * exponential backoff and resumes the same session with its id and resume
 * token. Inputs follow the server's latest-wins rule on the client side too: at
 * most one frame is in flight, and a frame sent meanwhile replaces the one that
 * waits, so nothing ever queues up behind a slow model.
 *
 * The message set mirrors `stream/messages.py` tag for tag (see {@link MessageType});
 * every message is one binary WebSocket frame holding one msgpack map, images
 * as raw bytes (msgpack bin), never base64.
 *
 *     import { LivegenClient } from "./livegen.js";
 *
 *     const client = new LivegenClient();
 *     client.addEventListener("state", (e) => console.log(e.detail.state));
 *     client.addEventListener("frame", async (e) => {
 *       const bitmap = await e.detail.bitmap();   // decoded off the main thread
 *       context.drawImage(bitmap, 0, 0);
 *       bitmap.close();
 *     });
 *     client.addEventListener("error", (e) => console.warn(e.detail.code, e.detail.message));
 *     await client.connect(defaultUrl(), { params: { prompt: "a watercolor fox" } });
 *     client.sendFrame(jpegBlob);                 // or () => canvasToBlob(canvas)
 *     client.updateParams({ prompt: "an owl" });  // reruns the latest input
 *
 * Events (all `CustomEvent`s; the payload is `event.detail`):
 *
 * | event     | detail |
 * |-----------|--------|
 * | `state`   | `{state, previous, attempt, retryInMs, reason}`: see {@link State} |
 * | `session` | the `session.started` message plus `isNew` (a new session, not a resume) |
 * | `frame`   | a {@link FrameResult} |
 * | `send`    | `{id, sentAt, bytes}` when a frame leaves |
 * | `error`   | a {@link LivegenError}: a server `error` message or a client-side refusal |
 * | `closing` | the `session.closing` message: the server is draining |
 * | `message` | any message of a type this client does not know and no handler took |
 *
 * Extension point, WebRTC signalling: offers, answers and ICE candidates will
 * travel over this same session as messages of their own types. A signalling
 * module registers a handler for the types the server sends and sends its own
 * with {@link LivegenClient#send}:
 *
 *     client.handle("webrtc.answer", (message) => peer.setRemoteDescription(message));
 *     client.send({ type: "webrtc.offer", sdp: offer.sdp });
 */

import { Decoder, Encoder } from "./vendor/msgpack/index.mjs";

export const PROTOCOL_VERSION = 1;

/** The `type` tags, one for one with `stream/messages.py`. */
export const MessageType = Object.freeze({
  // Client to server.
  SESSION_START: "session.start",
  PARAMS_UPDATE: "params.update",
  FRAME: "frame",
  SESSION_CLOSE: "session.close",
  // Server to client.
  SESSION_STARTED: "session.started",
  FRAME_OUT: "frame.out",
  ERROR: "error",
  SESSION_CLOSING: "session.closing",
});

/** The `code` of an `error` message (`stream/errors.py`), plus the client's own. */
export const ErrorCode = Object.freeze({
  MALFORMED_MESSAGE: "malformed_message",
  UNKNOWN_TYPE: "unknown_type",
  INVALID_FIELD: "invalid_field",
  INVALID_PARAMS: "invalid_params",
  LIMIT_EXCEEDED: "limit_exceeded",
  MESSAGE_TOO_BIG: "message_too_big",
  IMAGE_TOO_LARGE: "image_too_large",
  RATE_LIMITED: "rate_limited",
  INVALID_IMAGE: "invalid_image",
  NOT_STARTED: "not_started",
  ALREADY_STARTED: "already_started",
  UNSUPPORTED_VERSION: "unsupported_version",
  SESSION_NOT_FOUND: "session_not_found",
  SERVER_BUSY: "server_busy",
  PIPELINE_FAILED: "pipeline_failed",
  // Raised by this client, never sent by the server.
  INPUT_FAILED: "input_failed", // a frame source (Blob, producer) could not be read
  CONNECTION_LOST: "connection_lost", // the connection closed for good (see the state)
});

/** WebSocket close codes livegen uses (`stream/errors.py`). */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 1002,
  POLICY_VIOLATION: 1008,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  TRY_AGAIN_LATER: 1013,
  SESSION_TAKEN_OVER: 4001,
});

/**
 * Connection states, in the order a healthy client sees them.
 *
 * - `idle`: not connected yet.
 * - `connecting`: the first connection is being made.
 * - `open`: a session is started; frames can flow.
 * - `reconnecting`: the connection dropped; a retry is scheduled or under way.
 * - `busy`: the server is full (`server_busy`); retrying, more patiently.
 * - `closed`: closed on purpose (by {@link LivegenClient#close}, or the session
 *   was taken over by another connection); no retry.
 * - `error`: a fatal error no retry can fix (say, an unsupported protocol).
 */
export const State = Object.freeze({
  IDLE: "idle",
  CONNECTING: "connecting",
  OPEN: "open",
  RECONNECTING: "reconnecting",
  BUSY: "busy",
  CLOSED: "closed",
  ERROR: "error",
});

/** The params a session takes (`stream/params.py`). */
export const PARAM_NAMES = Object.freeze([
  "prompt",
  "negative_prompt",
  "seed",
  "steps",
  "strength",
  "guidance_scale",
  "width",
  "height",
  "output_format",
  "quality",
  "scheduler",
  "lora",
  "similarity_threshold",
  "latent_feedback",
]);

export const MAX_SEED = 2 ** 32 - 1;

const CORE_SERVER_TYPES = new Set([
  MessageType.SESSION_STARTED,
  MessageType.FRAME_OUT,
  MessageType.ERROR,
  MessageType.SESSION_CLOSING,
]);

/** The WebSocket URL of the livegen server that served this page. */
export function defaultUrl(location = globalThis.location) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

/** A random seed in the protocol's range. */
export function randomSeed() {
  const words = new Uint32Array(1);
  crypto.getRandomValues(words);
  return words[0];
}

/** An `error` from the server, or a refusal by this client; `code` is an {@link ErrorCode}. */
export class LivegenError extends Error {
  constructor({ code, message, fatal = false, id = null }) {
    super(message);
    this.name = "LivegenError";
    this.code = code;
    this.fatal = Boolean(fatal);
    /** The id of the frame the error is about, or null. */
    this.id = id ?? null;
  }
}

/** A generated frame (`frame.out`). */
export class FrameResult {
  constructor(message, { latencyMs, receivedAt }) {
    /** The id of the input frame it answers. */
    this.id = message.id;
    this.contentType = message.content_type;
    /** The encoded image; {@link FrameResult#bitmap} decodes it off the main thread. */
    this.blob = new Blob([message.image], { type: message.content_type });
    this.width = message.width;
    this.height = message.height;
    /** Milliseconds per server stage: `queue`, `decode`, `infer`, `encode`. */
    this.timings = message.timings ?? {};
    /** Inputs of this session the server replaced before they ran, so far. */
    this.dropped = message.dropped ?? 0;
    /** From sending the input to receiving this frame, when it answers the frame in flight. */
    this.latencyMs = latencyMs;
    this.receivedAt = receivedAt;
  }

  /** Decode to an `ImageBitmap` (the browser decodes it off the main thread). */
  bitmap() {
    return createImageBitmap(this.blob);
  }

  /** An object URL for the image; revoke it with `URL.revokeObjectURL` when done. */
  objectUrl() {
    return URL.createObjectURL(this.blob);
  }
}

/**
 * One livegen session over a WebSocket that is reopened and resumed as needed.
 *
 * Options (all optional): `reconnect` (true), `backoffInitialMs` (250),
 * `backoffMaxMs` (5000), `busyBackoffInitialMs` (1000), `frameTimeoutMs` (10000:
 * a frame in flight that long without an answer no longer blocks newer ones),
 * `WebSocket` (the constructor to use).
 */
export class LivegenClient extends EventTarget {
  constructor(options = {}) {
    super();
    this.options = {
      reconnect: true,
      backoffInitialMs: 250,
      backoffMaxMs: 5000,
      busyBackoffInitialMs: 1000,
      frameTimeoutMs: 10000,
      WebSocket: globalThis.WebSocket,
      ...options,
    };
    this.url = null;
    /** The current {@link State}. */
    this.state = State.IDLE;
    /** The last `session.started` message, or null before the first. */
    this.session = null;
    /** The session's params as the server has them, with this client's updates applied. */
    this.params = {};
    /** Counters: `sent`, `received`, `replaced` (frames superseded before leaving), `errors`. */
    this.stats = { sent: 0, received: 0, replaced: 0, errors: 0 };

    this._encoder = new Encoder({ ignoreUndefined: true });
    this._decoder = new Decoder();
    this._ws = null;
    this._wanted = {}; // every param this client set: sent again when a session starts anew
    this._started = false; // the session on the current socket is started
    this._startedWithParams = false; // the last session.start carried params
    this._attempt = 0;
    this._retryTimer = null;
    this._closedByUs = false;
    this._fatal = null; // the last fatal error, read when its close follows
    this._draining = false;
    this._nextId = 1;
    this._inFlight = null; // {id, sentAt, image, params, timer}
    this._pending = null; // {source, params}
    this._sending = false; // a pending frame's source is being read
    this._handlers = new Map();
    this._waiters = [];
    this._onOnline = () => {
      if (this.state === State.RECONNECTING || this.state === State.BUSY) this.reconnect();
    };
  }

  /** Create a client and {@link LivegenClient#connect} it. */
  static async connect(url, options = {}) {
    const client = new LivegenClient(options);
    await client.connect(url, options);
    return client;
  }

  /** The session id, or null before the first `session.started`. */
  get sessionId() {
    return this.session?.session_id ?? null;
  }

  /** True when no frame is in flight or waiting to leave. */
  get idle() {
    return this._inFlight === null && this._pending === null && !this._sending;
  }

  /**
   * Open the connection and start a session with `params`.
   *
   * Resolves with the `session.started` message once the first session is up;
   * it keeps retrying meanwhile (server not up yet, server busy) and rejects
   * only if the client is closed or fails for good first.
   */
  connect(url = defaultUrl(), { params = {} } = {}) {
    if (this.state !== State.IDLE && this.state !== State.CLOSED && this.state !== State.ERROR) {
      return Promise.reject(new Error(`already ${this.state}`));
    }
    this.url = url;
    this._wanted = { ...params };
    this.params = { ...params };
    this.session = null;
    this._closedByUs = false;
    this._attempt = 0;
    globalThis.addEventListener?.("online", this._onOnline);
    const started = new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
    this._open();
    return started;
  }

  /** Retry now instead of waiting out the backoff (also after a take-over). */
  reconnect() {
    if (this._ws !== null || this.url === null) return;
    clearTimeout(this._retryTimer);
    this._closedByUs = false;
    this._open();
  }

  /**
   * Change some params. They apply to the next frame; the server reruns the
   * latest input with them, so an edit alone gives a new frame. While
   * disconnected they are kept and sent with the resume.
   */
  updateParams(patch) {
    Object.assign(this._wanted, patch);
    Object.assign(this.params, patch);
    if (this._started) this._write({ type: MessageType.PARAMS_UPDATE, params: patch });
  }

  /**
   * Send an input frame, latest wins.
   *
   * `image` is a Blob, an ArrayBuffer or a typed array (JPEG, PNG or WebP
   * bytes), a function returning one of those (or a promise of one), called
   * only when the frame actually leaves (so a canvas is encoded once per frame
   * sent, not once per stroke), or null for a text-to-image request.
   * `params` apply first, as in a `frame` message.
   *
   * With no frame in flight it leaves at once. Otherwise it waits, replacing
   * any frame already waiting (their params are merged, newest last): the next
   * one leaves when the frame in flight is answered.
   */
  sendFrame(image = null, { params } = {}) {
    let merged = params ? { ...params } : null;
    if (this._pending !== null) {
      this.stats.replaced += 1;
      if (this._pending.params) merged = { ...this._pending.params, ...merged };
    }
    this._pending = { source: image, params: merged };
    if (params) {
      Object.assign(this._wanted, params);
      Object.assign(this.params, params);
    }
    this._pump();
  }

  /**
   * Send any message on the started session: the extension point for
   * messages this client does not know yet (WebRTC signalling). Returns false
   * when no session is open.
   */
  send(message) {
    if (!this._started) return false;
    this._write(message);
    return true;
  }

  /**
   * Take the server's messages of `type` (one this client does not handle
   * itself). Returns a function that removes the handler.
   */
  handle(type, handler) {
    if (CORE_SERVER_TYPES.has(type)) throw new Error(`${type} is handled by the client itself`);
    this._handlers.set(type, handler);
    return () => {
      if (this._handlers.get(type) === handler) this._handlers.delete(type);
    };
  }

  /**
   * Close the connection. By default the session ends at once (`session.close`);
   * `{endSession: false}` leaves it resumable for the server's grace period.
   */
  close({ endSession = true } = {}) {
    this._closedByUs = true;
    clearTimeout(this._retryTimer);
    globalThis.removeEventListener?.("online", this._onOnline);
    const ws = this._ws;
    if (ws !== null) {
      if (endSession && this._started) this._write({ type: MessageType.SESSION_CLOSE });
      ws.close(CloseCode.NORMAL);
    }
    this._dropSocket();
    this._setState(State.CLOSED, { reason: "closed by the client" });
    this._rejectWaiters(new Error("closed"));
  }

  // Connection.

  _open() {
    let state = State.RECONNECTING;
    if (this.session === null && this._attempt === 0) state = State.CONNECTING;
    else if (this.state === State.BUSY) state = State.BUSY; // still busy until proven otherwise
    this._setState(state, { attempt: this._attempt });
    let ws;
    try {
      ws = new this.options.WebSocket(this.url);
    } catch (error) {
      this._fail(new LivegenError({ code: ErrorCode.CONNECTION_LOST, message: error.message, fatal: true }));
      return;
    }
    ws.binaryType = "arraybuffer";
    ws.onopen = () => this._startSession(ws);
    ws.onmessage = (event) => this._receive(ws, event.data);
    // A close event always follows an error, with what we need to decide.
    ws.onerror = () => {};
    ws.onclose = (event) => this._onClose(ws, event);
    this._ws = ws;
    this._started = false;
    this._fatal = null;
    this._draining = false;
  }

  _startSession(ws, { withParams = true } = {}) {
    if (ws !== this._ws) return;
    const message = { type: MessageType.SESSION_START, protocol: PROTOCOL_VERSION };
    if (this.session !== null) {
      message.session_id = this.session.session_id;
      message.resume_token = this.session.resume_token;
    }
    if (withParams && Object.keys(this._wanted).length > 0) message.params = { ...this._wanted };
    this._startedWithParams = message.params !== undefined;
    this._write(message);
  }

  _onClose(ws, event) {
    if (ws !== this._ws) return;
    this._dropSocket();
    if (this._closedByUs) return;
    const fatal = this._fatal;
    if (event.code === CloseCode.SESSION_TAKEN_OVER) {
      this._setState(State.CLOSED, {
        reason: "the session was opened on another connection",
        code: event.code,
      });
      this._rejectWaiters(new Error("session taken over"));
      return;
    }
    if (event.code === CloseCode.PROTOCOL_ERROR || fatal?.code === ErrorCode.UNSUPPORTED_VERSION) {
      const error =
        fatal ??
        new LivegenError({
          code: ErrorCode.CONNECTION_LOST,
          message: event.reason || "protocol error",
          fatal: true,
        });
      this._fail(error, { told: fatal !== null });
      return;
    }
    if (!this.options.reconnect) {
      this._setState(State.CLOSED, { reason: event.reason || "connection closed", code: event.code });
      this._rejectWaiters(new Error("connection closed"));
      return;
    }
    const busy = event.code === CloseCode.TRY_AGAIN_LATER || fatal?.code === ErrorCode.SERVER_BUSY;
    let reason = event.reason || "connection lost";
    if (this._draining || event.code === CloseCode.GOING_AWAY) reason = "server restarting";
    if (busy) reason = "server busy";
    this._scheduleRetry(busy, reason, event.code);
  }

  _scheduleRetry(busy, reason, code) {
    const initial = busy ? this.options.busyBackoffInitialMs : this.options.backoffInitialMs;
    const capped = Math.min(this.options.backoffMaxMs, initial * 2 ** this._attempt);
    const delay = Math.round(capped * (0.8 + 0.4 * Math.random()));
    this._attempt += 1;
    this._setState(busy ? State.BUSY : State.RECONNECTING, {
      attempt: this._attempt,
      retryInMs: delay,
      reason,
      code,
    });
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => this._open(), delay);
  }

  /** Forget the socket; a frame that was in flight is sent again after the resume. */
  _dropSocket() {
    const ws = this._ws;
    if (ws !== null) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.onerror = () => {};
    }
    this._ws = null;
    this._started = false;
    const lost = this._inFlight;
    if (lost !== null) {
      clearTimeout(lost.timer);
      this._inFlight = null;
      if (this._pending === null) {
        this._pending = { source: lost.image, params: lost.params };
      } else if (lost.params) {
        this._pending.params = { ...lost.params, ...this._pending.params };
      }
    }
  }

  _fail(error, { told = false } = {}) {
    clearTimeout(this._retryTimer);
    const ws = this._ws;
    this._dropSocket();
    ws?.close();
    if (!told) this._emitError(error);
    this._setState(State.ERROR, { reason: error.message, code: error.code });
    this._rejectWaiters(error);
  }

  _setState(state, detail = {}) {
    const previous = this.state;
    this.state = state;
    this._emit("state", { state, previous, attempt: 0, retryInMs: null, reason: null, ...detail });
  }

  _rejectWaiters(error) {
    for (const waiter of this._waiters.splice(0)) waiter.reject(error);
  }

  // Messages.

  _write(message) {
    this._ws.send(this._encoder.encode(message));
  }

  _receive(ws, data) {
    if (ws !== this._ws) return;
    let message;
    try {
      if (typeof data === "string") throw new Error("a text frame");
      message = this._decoder.decode(new Uint8Array(data));
      if (message === null || typeof message !== "object" || typeof message.type !== "string") {
        throw new Error("not a map with a type");
      }
    } catch (error) {
      this._emitError({
        code: ErrorCode.MALFORMED_MESSAGE,
        message: `unreadable server message: ${error.message}`,
      });
      return;
    }
    switch (message.type) {
      case MessageType.SESSION_STARTED:
        this._onStarted(message);
        break;
      case MessageType.FRAME_OUT:
        this._onFrame(message);
        break;
      case MessageType.ERROR:
        this._onError(ws, message);
        break;
      case MessageType.SESSION_CLOSING:
        this._draining = true;
        this._emit("closing", message);
        break;
      default: {
        const handler = this._handlers.get(message.type);
        if (handler) handler(message, this);
        else this._emit("message", message);
      }
    }
  }

  _onStarted(message) {
    const isNew = this.session === null || this.session.session_id !== message.session_id;
    this.session = message;
    this.params = { ...message.params };
    this._started = true;
    this._attempt = 0;
    // Params set after the session.start left: with the next frame, or on their own.
    const late = Object.entries(this._wanted).filter(([name, value]) => message.params[name] !== value);
    if (late.length > 0) {
      const patch = Object.fromEntries(late);
      Object.assign(this.params, patch);
      if (this._pending !== null) this._pending.params = { ...patch, ...this._pending.params };
      else this._write({ type: MessageType.PARAMS_UPDATE, params: patch });
    }
    this._setState(State.OPEN, { resumed: message.resumed });
    this._emit("session", { ...message, isNew });
    for (const waiter of this._waiters.splice(0)) waiter.resolve(message);
    this._pump();
  }

  _onFrame(message) {
    const receivedAt = performance.now();
    this.stats.received += 1;
    const flight = this._inFlight;
    let latencyMs = null;
    if (flight !== null && message.id >= flight.id) {
      if (message.id === flight.id) latencyMs = receivedAt - flight.sentAt;
      this._settle();
    }
    this._emit("frame", new FrameResult(message, { latencyMs, receivedAt }));
  }

  _onError(ws, message) {
    const error = new LivegenError(message);
    if (error.fatal) {
      this._fatal = error; // the close that follows decides what comes next
      this._emitError(error);
    } else if (!this._started) {
      // The start was refused; the connection stays open for another try.
      this._emitError(error);
      if (error.code === ErrorCode.SESSION_NOT_FOUND) {
        this.session = null; // expired, or the server restarted: begin anew
        this._startSession(ws);
      } else if (this._startedWithParams) {
        this._wanted = {};
        this._startSession(ws, { withParams: false }); // with the server's defaults, then
      } else {
        this._fail(error, { told: true });
      }
    } else {
      // A frame refused, failed, or perhaps dropped by the rate limit: the next may
      // go. Settled before listeners hear of it, so they see the client as it is.
      const flight = this._inFlight;
      if (flight !== null && (error.id === flight.id || error.code === ErrorCode.RATE_LIMITED)) {
        this._settle();
      }
      this._emitError(error);
    }
  }

  _emitError(fields) {
    const error = fields instanceof LivegenError ? fields : new LivegenError(fields);
    this.stats.errors += 1;
    this._emit("error", error);
    return error;
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  // Frames: one in flight, one waiting, the waiting one replaced by newer ones.

  _settle() {
    clearTimeout(this._inFlight.timer);
    this._inFlight = null;
    this._pump();
  }

  async _pump() {
    if (!this._started || this._inFlight !== null || this._sending || this._pending === null) return;
    const request = this._pending;
    this._pending = null;
    this._sending = true;
    let image;
    try {
      image = await readImage(request.source);
    } catch (error) {
      this._sending = false;
      this._emitError({
        code: ErrorCode.INPUT_FAILED,
        message: `could not read the frame: ${error.message}`,
      });
      this._pump();
      return;
    }
    this._sending = false;
    if (!this._started) {
      // The connection dropped while the image was read: it goes after the resume.
      if (this._pending === null) this._pending = { source: image, params: request.params };
      else if (request.params) this._pending.params = { ...request.params, ...this._pending.params };
      return;
    }
    const limit = this.session?.limits?.max_message_bytes;
    if (image !== null && limit && image.byteLength > limit - 4096) {
      this._emitError({
        code: ErrorCode.MESSAGE_TOO_BIG,
        message: `frame of ${image.byteLength} bytes is over the server's limit of ${limit}`,
      });
      this._pump();
      return;
    }
    const id = this._nextId++;
    const message = { type: MessageType.FRAME, id };
    if (image !== null) message.image = image;
    if (request.params) message.params = request.params;
    const sentAt = performance.now();
    const timer = setTimeout(() => {
      if (this._inFlight?.id === id) this._settle();
    }, this.options.frameTimeoutMs);
    this._inFlight = { id, sentAt, image, params: request.params, timer };
    this._write(message);
    this.stats.sent += 1;
    this._emit("send", { id, sentAt, bytes: image?.byteLength ?? 0 });
  }
}

/** Bytes of a frame source (see {@link LivegenClient#sendFrame}), or null for none. */
async function readImage(source) {
  let value = typeof source === "function" ? await source() : await source;
  if (value === null || value === undefined) return null;
  if (value instanceof Blob) value = await value.arrayBuffer();
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  throw new TypeError(`a frame image must be a Blob, an ArrayBuffer or bytes, not ${typeof value}`);
}

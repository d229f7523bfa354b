/**
 * livegen.js: a browser client for livegen's WebSocket protocol (version 1).
 *
 * One {@link LivegenClient} holds one session. It opens the WebSocket, starts the
 * session, and keeps it: when the connection drops it reconnects with
 * exponential backoff and resumes the same session with its id and resume
 * token, at `/ws?sid=<session id>` so that a proxy in front of many replicas
 * finds the one that holds it; a session that is gone (`session_not_found`)
 * is started afresh. A full server refuses the handshake with HTTP 503 and
 * `Retry-After`, which a browser cannot read off a failed WebSocket: the
 * client asks the same URL over HTTP and waits as long as the server says,
 * in the `busy` state ("server busy"). Inputs follow the server's latest-wins rule on the client side too: at
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
 * WebRTC: {@link LivegenClient#call} sends a camera over a WebRTC call and gives
 * back the session's generated video; the signalling (offer, answer, ICE
 * candidates, hang-up) travels over this same session (see {@link LivegenCall}):
 *
 *     const camera = await navigator.mediaDevices.getUserMedia({ video: true });
 *     const call = client.call(camera);
 *     video.srcObject = call.remoteStream;        // the generated video
 *     await call.connected;                       // or a LivegenError: webrtc_failed
 *     client.updateParams({ prompt: "an owl" });  // applies to the next frame
 *     call.hangUp();
 *
 * Extension point: other messages of types this client does not know travel
 * the same way. A module registers a handler for the types the server sends
 * with {@link LivegenClient#handle} and sends its own with {@link LivegenClient#send}.
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
  WEBRTC_OFFER: "webrtc.offer",
  WEBRTC_CANDIDATE: "webrtc.candidate",
  WEBRTC_CLOSE: "webrtc.close",
  // Server to client.
  SESSION_STARTED: "session.started",
  FRAME_OUT: "frame.out",
  ERROR: "error",
  SESSION_CLOSING: "session.closing",
  WEBRTC_ANSWER: "webrtc.answer",
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
  WEBRTC_FAILED: "webrtc_failed", // also raised by the client: no answer, or ICE failed
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

/**
 * The WebSocket URL of the livegen server that served this page. A `token` in
 * the page's own query goes along: a server with auth on asks for one.
 */
export function defaultUrl(location = globalThis.location) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const token = new URLSearchParams(location.search).get("token");
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  return `${scheme}//${location.host}/ws${query}`;
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
    this._opened = false; // the current socket got past its handshake
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
    this._call = null;
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
   * Start a WebRTC call: the video of `stream` (a camera) becomes the session's
   * input, and its generated frames come back as video, at the model's pace.
   * Returns a {@link LivegenCall} at once (see there for `options`); a call
   * already under way is hung up first. The signalling rides on this session,
   * and the call follows it: after a reconnect, it offers again by itself.
   */
  call(stream, options = {}) {
    if (this._call?.active) this._call.hangUp();
    this._call = new LivegenCall(this, stream, options);
    return this._call;
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
      ws = new this.options.WebSocket(this._socketUrl());
    } catch (error) {
      this._fail(new LivegenError({ code: ErrorCode.CONNECTION_LOST, message: error.message, fatal: true }));
      return;
    }
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      this._opened = true;
      this._startSession(ws);
    };
    ws.onmessage = (event) => this._receive(ws, event.data);
    // A close event always follows an error, with what we need to decide.
    ws.onerror = () => {};
    ws.onclose = (event) => this._onClose(ws, event);
    this._ws = ws;
    this._opened = false;
    this._started = false;
    this._fatal = null;
    this._draining = false;
  }

  /** The URL to open: with `sid` when resuming, which is what a proxy routes by. */
  _socketUrl() {
    if (this.session === null) return this.url;
    const url = new URL(this.url);
    url.searchParams.set("sid", this.session.session_id);
    return url.href;
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
    const refused = !this._opened;
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
    if (refused) this._retryAfterRefusal(reason, event.code);
    else this._scheduleRetry(busy, reason, event.code);
  }

  /**
   * The handshake failed: ask the same URL with a plain GET, which a full (or
   * draining) server answers with 503 and `Retry-After`, and wait that long.
   */
  async _retryAfterRefusal(reason, code) {
    const url = new URL(this._socketUrl());
    url.protocol = url.protocol === "wss:" ? "https:" : "http:";
    let answer = null;
    try {
      answer = await fetch(url, { cache: "no-store" });
    } catch {
      // The server is down or another origin's: retry as after any drop.
    }
    if (this._closedByUs || this._ws !== null) return;
    if (answer?.status !== 503) {
      this._scheduleRetry(false, reason, code);
      return;
    }
    const seconds = Number.parseFloat(answer.headers.get("Retry-After") ?? "");
    this._scheduleRetry(true, "server busy", code, Number.isFinite(seconds) ? seconds * 1000 : null);
  }

  _scheduleRetry(busy, reason, code, retryAfterMs = null) {
    const initial = busy ? this.options.busyBackoffInitialMs : this.options.backoffInitialMs;
    const capped = Math.min(this.options.backoffMaxMs, initial * 2 ** this._attempt);
    const delay = retryAfterMs ?? Math.round(capped * (0.8 + 0.4 * Math.random()));
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

/**
 * The states of a {@link LivegenCall}, in the order a healthy call sees them.
 *
 * - `waiting`: no session to call on yet (the client is connecting, or
 *   reconnecting after a drop); the offer leaves once the session is back.
 * - `offering`: the offer is made and sent; waiting for the server's answer.
 * - `connecting`: answered; ICE and DTLS are under way.
 * - `connected`: video flows both ways.
 * - `failed`: the call could not connect, or broke; `error` says why. Over.
 * - `closed`: hung up. Over.
 */
export const CallState = Object.freeze({
  WAITING: "waiting",
  OFFERING: "offering",
  CONNECTING: "connecting",
  CONNECTED: "connected",
  FAILED: "failed",
  CLOSED: "closed",
});

/**
 * Why a call failed: the `reason` of its {@link LivegenError} (code `webrtc_failed`).
 *
 * - `no_video`: the stream given has no video track.
 * - `refused`: the browser could not make an offer, or the server refused it.
 * - `no_answer`: no `webrtc.answer` within `answerTimeoutMs`.
 * - `unreachable`: ICE and DTLS did not connect (within `connectTimeoutMs`):
 *   the browser cannot reach the server's media addresses, or UDP is blocked.
 * - `lost`: the connection failed during the call (the server's `webrtc_failed`).
 * - `session_lost`: the session failed for good (see the client's state).
 */
export const CallFailure = Object.freeze({
  NO_VIDEO: "no_video",
  REFUSED: "refused",
  NO_ANSWER: "no_answer",
  UNREACHABLE: "unreachable",
  LOST: "lost",
  SESSION_LOST: "session_lost",
});

const CALL_ENDED = new Set([CallState.FAILED, CallState.CLOSED]);

/**
 * One WebRTC call on a session, made by {@link LivegenClient#call}: the
 * stream's video goes out, and the generated video comes back on the same
 * video line (one send-receive transceiver).
 *
 * Signalling: the offer goes as `webrtc.offer`; the browser's ICE candidates
 * are trickled as `webrtc.candidate` as they are found (an empty one ends them);
 * the server does not trickle: its `webrtc.answer` holds all its candidates.
 * {@link LivegenCall#hangUp} sends `webrtc.close`.
 *
 * A dropped WebSocket takes the server's side of the call with it, so the call
 * goes back to `waiting` and, once the session is back (resumed, or started
 * anew), offers again on a fresh peer connection. {@link LivegenCall#remoteStream}
 * stays the same object throughout; its track is replaced (a `track` event says so).
 *
 * It fails (state `failed`, a {@link LivegenError} of code `webrtc_failed` with a
 * {@link CallFailure} `reason`) when the server refuses the offer or does not
 * answer within `answerTimeoutMs`, when ICE and DTLS fail or take longer than
 * `connectTimeoutMs`, or when the server reports that the connection failed.
 *
 * Options: `iceServers` (default: the `ice_servers` of the session),
 * `answerTimeoutMs` (10000), `connectTimeoutMs` (10000: browsers themselves wait
 * far longer before they call ICE failed), `degradationPreference`
 * (`maintain-resolution`: under load the uplink sends fewer frames, never
 * smaller ones, since the model works at a fixed size; null leaves the
 * browser's choice), `RTCPeerConnection` (the constructor to use).
 *
 * Events: `state` (`{state, previous, error}`), `track` (`{track}`, the new
 * remote track).
 */
export class LivegenCall extends EventTarget {
  constructor(client, stream, options = {}) {
    super();
    this.client = client;
    /** The stream sent; the call never stops its tracks (they are the caller's). */
    this.localStream = stream;
    this.options = {
      iceServers: null,
      answerTimeoutMs: 10000,
      connectTimeoutMs: 10000,
      degradationPreference: "maintain-resolution",
      RTCPeerConnection: globalThis.RTCPeerConnection,
      ...options,
    };
    /** The generated video: one video track, replaced after a reconnect. */
    this.remoteStream = new MediaStream();
    /** The current {@link CallState}. */
    this.state = null;
    /** Why the call failed (a {@link LivegenError}), or null. */
    this.error = null;
    /** Offers sent: one, and one more after each reconnect. */
    this.offers = 0;
    /**
     * Resolves with {@link LivegenCall#remoteStream} the first time video flows;
     * rejects with the error if the call fails first (an `AbortError` if hung up).
     */
    this.connected = new Promise((resolve, reject) => {
      this._resolve = resolve;
      this._reject = reject;
    });
    this.connected.catch(() => {}); // a call nobody awaits reports no unhandled rejection
    this._pc = null;
    this._timer = null;
    this._early = null; // candidates found before the offer left
    this._ended = false; // end of candidates sent for the current offer
    this._unhandle = client.handle(MessageType.WEBRTC_ANSWER, (message) => this._onAnswer(message));
    this._listeners = [
      ["state", (event) => this._onClientState(event.detail)],
      ["session", () => this._onSession()],
      ["error", (event) => this._onClientError(event.detail)],
    ];
    for (const [type, listener] of this._listeners) client.addEventListener(type, listener);
    if (stream.getVideoTracks().length === 0) {
      this._fail("the stream has no video track to send", CallFailure.NO_VIDEO);
    } else if (client.state === State.OPEN) {
      this._offer();
    } else {
      this._setState(CallState.WAITING);
    }
  }

  /** True until the call is hung up or has failed. */
  get active() {
    return this.state !== null && !CALL_ENDED.has(this.state);
  }

  /** The current `RTCPeerConnection` (for `getStats`), or null between offers. */
  get peerConnection() {
    return this._pc;
  }

  /** Hang up: `webrtc.close`, then the peer connection closes. The session goes on. */
  hangUp() {
    if (!this.active) return;
    this.client.send({ type: MessageType.WEBRTC_CLOSE });
    this._end(CallState.CLOSED, null);
  }

  async _offer() {
    this._dropPeer();
    const pc = new this.options.RTCPeerConnection({
      iceServers: this.options.iceServers ?? this.client.session?.ice_servers ?? [],
    });
    this._pc = pc;
    this._early = [];
    this._ended = false;
    this._setState(CallState.OFFERING);
    for (const track of this.localStream.getVideoTracks()) pc.addTrack(track, this.localStream);
    pc.ontrack = ({ track }) => pc === this._pc && this._setTrack(track);
    pc.onicecandidate = ({ candidate }) => pc === this._pc && this._trickle(candidate);
    pc.onconnectionstatechange = () => pc === this._pc && this._onPeerState(pc.connectionState);
    try {
      await pc.setLocalDescription(await pc.createOffer());
    } catch (error) {
      if (pc === this._pc) {
        this._fail(`the browser could not make an offer: ${error.message}`, CallFailure.REFUSED);
      }
      return;
    }
    if (pc !== this._pc) return; // hung up, or the connection dropped, meanwhile
    if (!this.client.send({ type: MessageType.WEBRTC_OFFER, sdp: pc.localDescription.sdp })) {
      this._dropPeer(); // the socket dropped before the offer left: the resume brings a new one
      this._setState(CallState.WAITING);
      return;
    }
    this.offers += 1;
    const early = this._early;
    this._early = null;
    for (const candidate of early) this._trickle(candidate);
    const seconds = this.options.answerTimeoutMs / 1000;
    this._arm(
      `the server did not answer the call within ${seconds} s`,
      CallFailure.NO_ANSWER,
      this.options.answerTimeoutMs,
    );
  }

  /** Send one of the browser's candidates; null or an empty one ends them. */
  _trickle(candidate) {
    if (this._early !== null) {
      this._early.push(candidate);
      return;
    }
    if (candidate?.candidate) {
      this.client.send({
        type: MessageType.WEBRTC_CANDIDATE,
        candidate: candidate.candidate,
        sdp_mid: candidate.sdpMid,
        sdp_mline_index: candidate.sdpMLineIndex,
      });
    } else if (!this._ended) {
      this._ended = true;
      this.client.send({ type: MessageType.WEBRTC_CANDIDATE, candidate: "" });
    }
  }

  async _onAnswer(message) {
    const pc = this._pc;
    if (pc === null || this.state !== CallState.OFFERING) return; // not for the offer standing
    this._setState(CallState.CONNECTING);
    const seconds = this.options.connectTimeoutMs / 1000;
    this._arm(
      `the video connection did not come up within ${seconds} s`,
      CallFailure.UNREACHABLE,
      this.options.connectTimeoutMs,
    );
    try {
      await pc.setRemoteDescription({ type: "answer", sdp: message.sdp });
    } catch (error) {
      if (pc === this._pc) {
        this._fail(`the server's answer did not fit: ${error.message}`, CallFailure.REFUSED);
      }
      return;
    }
    await this._preferDegradation(pc);
  }

  /** Set the senders' `degradationPreference` (once negotiated: the encoder exists then). */
  async _preferDegradation(pc) {
    const preference = this.options.degradationPreference;
    if (preference === null) return;
    for (const sender of pc.getSenders()) {
      if (sender.track?.kind !== "video") continue;
      const parameters = sender.getParameters();
      parameters.degradationPreference = preference;
      try {
        await sender.setParameters(parameters);
      } catch {
        // A browser without the setting (or a call hung up meanwhile): the encoder's default stays.
      }
    }
  }

  _onPeerState(state) {
    if (state === "connected" && this.state === CallState.CONNECTING) {
      clearTimeout(this._timer);
      this._setState(CallState.CONNECTED);
      this._resolve(this.remoteStream);
    } else if (state === "failed") {
      this._fail(
        "the video connection failed: the browser and the server could not reach each other",
        this.state === CallState.CONNECTED ? CallFailure.LOST : CallFailure.UNREACHABLE,
      );
    }
  }

  _onClientState({ state, code }) {
    if (!this.active) return;
    if (state === State.OPEN) return; // the `session` event that follows offers again
    if (state === State.ERROR) {
      this._fail("the session failed", CallFailure.SESSION_LOST);
    } else if (state === State.CLOSED && code !== CloseCode.SESSION_TAKEN_OVER) {
      this._end(CallState.CLOSED, null); // the client was closed
    } else if (this.state !== CallState.WAITING) {
      // Reconnecting, busy, or taken over: the server's side of the call is gone.
      this._dropPeer();
      this._setState(CallState.WAITING);
    }
  }

  _onSession() {
    if (this.state === CallState.WAITING) this._offer();
  }

  _onClientError(error) {
    if (!this.active) return;
    if (error.code === ErrorCode.WEBRTC_FAILED) {
      this._fail(error.message, CallFailure.LOST);
    } else if (
      error.code === ErrorCode.INVALID_FIELD &&
      this.state === CallState.OFFERING &&
      error.message.startsWith(MessageType.WEBRTC_OFFER) // the server names what it refused
    ) {
      this._fail(error.message, CallFailure.REFUSED);
    }
  }

  _setTrack(track) {
    for (const old of this.remoteStream.getTracks()) {
      if (old !== track) {
        this.remoteStream.removeTrack(old);
        old.stop();
      }
    }
    if (this.remoteStream.getTrackById(track.id) === null) this.remoteStream.addTrack(track);
    this._emit("track", { track });
  }

  _arm(message, reason, delayMs) {
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._fail(message, reason), delayMs);
  }

  _fail(message, reason) {
    const error = new LivegenError({ code: ErrorCode.WEBRTC_FAILED, message });
    /** A {@link CallFailure}. */
    error.reason = reason;
    // Free the server's side, if it has one (it hung up already if it reported the failure).
    if (this.offers > 0) this.client.send({ type: MessageType.WEBRTC_CLOSE });
    this._end(CallState.FAILED, error);
  }

  _end(state, error) {
    this._dropPeer();
    for (const track of this.remoteStream.getTracks()) {
      this.remoteStream.removeTrack(track);
      track.stop();
    }
    this._unhandle();
    for (const [type, listener] of this._listeners) this.client.removeEventListener(type, listener);
    this.error = error;
    this._setState(state, error);
    this._reject(error ?? new DOMException("the call was hung up", "AbortError"));
  }

  _dropPeer() {
    clearTimeout(this._timer);
    const pc = this._pc;
    this._pc = null;
    this._early = null;
    if (pc !== null) {
      pc.ontrack = pc.onicecandidate = pc.onconnectionstatechange = null;
      pc.close();
    }
  }

  _setState(state, error = null) {
    const previous = this.state;
    if (previous === state) return;
    this.state = state;
    this._emit("state", { state, previous, error });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

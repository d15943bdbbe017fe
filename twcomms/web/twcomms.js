// twcomms.js: a browser client of a twcomms hub, over its WebSocket gateway.
// One ES module, no build step, no dependencies; served by the hub at
// /twcomms.js. The wire mapping is docs/protocol.md, "WebSocket mapping".
//
//   import { Client } from "/twcomms.js";
//   const client = new Client({ type: "json" });
//   client.onmessage = (message) => console.log(message);
//   await client.opened;             // connected (and extended, by default)
//   client.send({ hello: "hub" });
//   const answer = await client.request({ q: 1 });
//   await client.join("lobby");
//
// Events (set client.on<name> or addEventListener(name, e => e.detail)):
// open, message (the message), close ({code, reason, wasClean}, and
// message: what went wrong, when the client itself gave up on the
// connection), reconnecting ({attempt, delay}), decodeerror ({error, data}).
// client.onrequest = async (message) => reply answers the hub's requests.

const HELLO_MAGIC = [0xff, 0x54, 0x57, 0x43, 0x4f, 0x4d, 0x4d, 0x53, 0x00,
  0x48, 0x45, 0x4c, 0x4c, 0x4f, 0x0d, 0x0a];
const ANSWER_MAGIC = [0xff, 0x54, 0x57, 0x43, 0x4f, 0x4d, 0x4d, 0x53, 0x00,
  0x52, 0x45, 0x41, 0x44, 0x59, 0x0d, 0x0a];
const VERSION = 1;
const NONCE = 16;
export const Kind = Object.freeze({
  MESSAGE: 0, PING: 1, PONG: 2, REQUEST: 3, REPLY: 4, ERROR: 5, AUTH: 6,
  JOIN: 7, LEAVE: 8,
});
const WITH_ID = new Set([Kind.REQUEST, Kind.REPLY, Kind.ERROR, Kind.AUTH,
  Kind.JOIN, Kind.LEAVE]);
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** The hub answered a request with an error: its type and message. */
export class RemoteError extends Error {
  constructor(type, message) {
    super(`${type}: ${message}`);
    this.name = "RemoteError";
    this.type = type;
    this.remoteMessage = message;
  }
}

/** Not connected, or the connection closed before an answer came. */
export class ConnectionClosedError extends Error {
  constructor(message) { super(message); this.name = "ConnectionClosedError"; }
}

/** No reply within the request's timeout. */
export class RequestTimeoutError extends Error {
  constructor(message) { super(message); this.name = "RequestTimeoutError"; }
}

/** request(), join() or leave() on a connection without that feature. */
export class NotNegotiatedError extends Error {
  constructor(message) { super(message); this.name = "NotNegotiatedError"; }
}

function defaultUrl() {
  const url = new URL("/ws", import.meta.url);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

function startsWith(bytes, magic) {
  if (bytes.length < magic.length) return false;
  for (let i = 0; i < magic.length; i++) if (bytes[i] !== magic[i]) return false;
  return true;
}

function concat(...parts) {
  const size = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

function withId(kind, id, body) {
  const out = new Uint8Array(5 + body.length);
  out[0] = kind;
  new DataView(out.buffer).setUint32(1, id, true);  // always little-endian
  out.set(body, 5);
  return out;
}

export class Client extends EventTarget {
  /**
   * @param {object} [options]
   * @param {string} [options.url] ws:// or wss:// URL of the gateway
   *   (default: /ws on the host that served this script)
   * @param {"json"|"string"|"binary"} [options.type] the hub's message type
   * @param {boolean} [options.extensions] ask for the extended protocol
   *   (request/reply, rooms, heartbeats, auth); default true
   * @param {*} [options.credentials] sent to the hub's authenticate()
   * @param {boolean} [options.reconnect] reconnect with back-off; default true
   * @param {number} [options.initialDelay] seconds before the first retry (0.5)
   * @param {number} [options.maxDelay] the longest wait between retries (30)
   * @param {number} [options.requestTimeout] seconds; null: none (30)
   * @param {number} [options.extensionTimeout] seconds to wait for the
   *   hub's answer to the hello (10)
   * @param {{interval: number, timeout: number}|null} [options.heartbeat]
   *   asked of the hub; null: none (default {interval: 25, timeout: 20})
   */
  constructor(options = {}) {
    super();
    this.url = options.url ?? defaultUrl();
    this.type = options.type ?? "json";
    if (!["json", "string", "binary"].includes(this.type)) {
      throw new TypeError(`type must be json, string or binary, not ${this.type}`);
    }
    this.extensions = options.extensions ?? true;
    this.credentials = options.credentials;
    this.reconnect = options.reconnect ?? true;
    this.initialDelay = options.initialDelay ?? 0.5;
    this.maxDelay = options.maxDelay ?? 30;
    this.requestTimeout = options.requestTimeout === undefined ? 30 : options.requestTimeout;
    this.extensionTimeout = options.extensionTimeout ?? 10;
    this.heartbeat = options.heartbeat === undefined
      ? { interval: 25, timeout: 20 } : options.heartbeat;
    this.connected = false;     // open: send() works
    this.extended = false;      // the extended protocol was agreed
    this.features = {};         // what the hub granted
    this.identity = null;       // who auth made us
    this.onopen = this.onmessage = this.onclose = null;
    this.onreconnecting = this.ondecodeerror = this.onrequest = null;
    this._ws = null;
    this._closed = false;       // close() was called
    this._attempt = 0;
    this._nextId = 1;
    this._pending = new Map();
    this._opened();
    this._connect();
  }

  /** The hub's message type decides text or binary: see send(). */
  send(message) {
    if (!this.connected) {
      throw new ConnectionClosedError(
        `not connected to ${this.url}: nothing was sent (wait for client.opened)`);
    }
    const data = this._encode(message);
    if (typeof data === "string") this._ws.send(data);
    else this._ws.send(this.extended ? concat([Kind.MESSAGE], data) : data);
  }

  /** A request to the hub: a promise of its reply. */
  request(message, { timeout = this.requestTimeout } = {}) {
    const body = this._encode(message);
    return this._ask(Kind.REQUEST, typeof body === "string" ? encoder.encode(body) : body,
      "request", timeout).then((data) => this._decode(data, false));
  }

  /** Join a room: a promise of whether this changed anything. */
  join(room) {
    return this._ask(Kind.JOIN, encoder.encode(room), "rooms", this.requestTimeout)
      .then((data) => data[0] === 1);
  }

  /** Leave a room: a promise of whether this changed anything. */
  leave(room) {
    return this._ask(Kind.LEAVE, encoder.encode(room), "rooms", this.requestTimeout)
      .then((data) => data[0] === 1);
  }

  /** Close for good (no reconnect). */
  close(code = 1000, reason = "closed") {
    this._closed = true;
    // send() refuses from now on: a closing WebSocket would drop it silently.
    this.connected = false;
    clearTimeout(this._retryTimer);
    if (this._ws) this._ws.close(code, reason);
  }

  // -- connecting ----------------------------------------------------------

  _opened() {
    this.opened = new Promise((resolve) => { this._resolveOpened = resolve; });
  }

  _connect() {
    const ws = new WebSocket(this.url);
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    this._held = [];
    this._answered = !this.extensions;
    ws.onopen = () => this._onOpen(ws);
    ws.onmessage = (event) => { if (ws === this._ws) this._onMessage(event.data); };
    ws.onclose = (event) => { if (ws === this._ws) this._onClose(event); };
  }

  _onOpen(ws) {
    if (!this.extensions) { this._start(); return; }
    this._nonce = crypto.getRandomValues(new Uint8Array(NONCE));
    const features = { request: {}, rooms: {} };
    if (this.heartbeat) features.heartbeat = { ...this.heartbeat };
    if (this.credentials !== undefined) features.auth = {};
    ws.send(concat(HELLO_MAGIC, [VERSION], this._nonce,
      encoder.encode(JSON.stringify(features))));
    this._helloTimer = setTimeout(() => {
      this._fail(1002, "extension timeout", "the hub did not answer the hello: " +
        "not a twcomms hub with extensions (use extensions: false)");
    }, this.extensionTimeout * 1000);
  }

  _agreed(bytes) {
    clearTimeout(this._helloTimer);
    let features;
    try {
      features = JSON.parse(decoder.decode(bytes.subarray(33)));
    } catch (error) {
      this._fail(1002, "extension timeout", `a malformed answer: ${error}`);
      return;
    }
    this._answered = true;
    this.extended = true;
    this.features = features;
    const heartbeat = features.heartbeat;
    this._silence = heartbeat ? (heartbeat.interval + heartbeat.timeout) * 1000 : null;
    this._alive();
    if (this.credentials !== undefined || features.auth?.required) {
      if (this.credentials === undefined) {
        this._fail(1008, "auth failed", "the hub requires credentials");
        return;
      }
      const body = this._encode(this.credentials);
      this._ask(Kind.AUTH, typeof body === "string" ? encoder.encode(body) : body,
        "auth", this.extensionTimeout, true).then((identity) => {
        this.identity = decoder.decode(identity);
        this._start();
      }, (error) => this._fail(1008, "auth failed", String(error)));
      return;
    }
    this._start();
  }

  _start() {
    this.connected = true;
    this._attempt = 0;
    this._emit("open", null);
    this._resolveOpened(this);
    const held = this._held;
    this._held = [];
    for (const [data, isText] of held) this._deliver(data, isText);
  }

  // Give up on the connection (reason: the close reason, as the hub names
  // it), at once: the closing handshake is not waited for, since a hub that
  // went silent never answers it and the browser would hold the close event,
  // and so the reconnection, until its own timeout (a minute in Chromium).
  // A script may close with 1000 or 3000-4999: 1002 and 1008 go as 4002, 4008.
  _fail(code, reason, detail) {
    const ws = this._ws;
    if (!ws || ws.readyState === WebSocket.CLOSED) return;  // closed already
    const sent = code === 1000 ? 1000 : code + 3000;
    ws.close(sent, reason);
    this._ws = null;  // its own close event, whenever it comes, is ignored
    this._onClose({ code: sent, reason, wasClean: false }, detail);
  }

  _onClose(event, detail) {
    clearTimeout(this._helloTimer);
    clearTimeout(this._silenceTimer);
    const wasOpen = this.connected;
    this.connected = false;
    this.extended = false;
    for (const [, pending] of this._pending) {
      clearTimeout(pending.timer);
      pending.reject(new ConnectionClosedError(
        `the connection closed (${event.code} ${event.reason}) before an answer came`));
    }
    this._pending.clear();
    const closed = { code: event.code, reason: event.reason, wasClean: event.wasClean };
    if (detail !== undefined) closed.message = detail;
    this._emit("close", closed);
    if (wasOpen) this._opened();
    if (this._closed || !this.reconnect) return;
    const delay = Math.min(this.maxDelay, this.initialDelay * 2 ** this._attempt)
      * (0.75 + Math.random() / 2);
    this._attempt += 1;
    this._emit("reconnecting", { attempt: this._attempt, delay });
    this._retryTimer = setTimeout(() => { if (!this._closed) this._connect(); },
      delay * 1000);
  }

  // -- receiving -----------------------------------------------------------

  _onMessage(data) {
    this._alive();
    const isText = typeof data === "string";
    const bytes = isText ? null : new Uint8Array(data);
    if (!this._answered) {
      if (!isText && startsWith(bytes, ANSWER_MAGIC) && bytes.length >= 35 &&
          bytes.subarray(17, 33).every((b, i) => b === this._nonce[i])) {
        this._agreed(bytes);
      } else {
        this._held.push([isText ? data : bytes, isText]);
      }
      return;
    }
    if (isText || !this.extended) {
      if (this.connected) this._deliver(isText ? data : bytes, isText);
      else this._held.push([isText ? data : bytes, isText]);
      return;
    }
    if (bytes.length === 0) return;  // counted and dropped, as the hub does
    const kind = bytes[0];
    if (kind === Kind.MESSAGE) {
      if (this.connected) this._deliver(bytes.subarray(1), false);
      else this._held.push([bytes.subarray(1), false]);
    } else if (kind === Kind.PING) {
      this._ws.send(concat([Kind.PONG], bytes.subarray(1, 65)));
    } else if (WITH_ID.has(kind) && bytes.length >= 5) {
      const id = new DataView(bytes.buffer, bytes.byteOffset).getUint32(1, true);
      const rest = bytes.subarray(5);
      if (kind === Kind.REPLY || kind === Kind.ERROR) this._answer(kind, id, rest);
      else if (kind === Kind.REQUEST) this._requested(id, rest);
    }
  }

  _alive() {
    clearTimeout(this._silenceTimer);
    if (this._silence) {
      this._silenceTimer = setTimeout(
        () => this._fail(1000, "heartbeat timeout", "the hub went silent"), this._silence);
    }
  }

  _deliver(data, isText) {
    let message;
    try {
      message = this._decode(data, isText);
    } catch (error) {
      this._emit("decodeerror", { error, data });
      return;
    }
    this._emit("message", message);
  }

  _encode(message) {
    if (this.type === "binary" || message instanceof Uint8Array ||
        message instanceof ArrayBuffer || ArrayBuffer.isView(message)) {
      if (message instanceof Uint8Array) return message;
      if (message instanceof ArrayBuffer) return new Uint8Array(message);
      if (ArrayBuffer.isView(message)) {
        return new Uint8Array(message.buffer, message.byteOffset, message.byteLength);
      }
      if (typeof message === "string") return encoder.encode(message);
      throw new TypeError("a binary hub takes Uint8Array, ArrayBuffer or string");
    }
    if (this.type === "string") {
      if (typeof message !== "string") throw new TypeError("a string hub takes strings");
      return message;
    }
    const text = JSON.stringify(message);
    if (text === undefined) {
      throw new TypeError(`a json hub takes JSON values, not ${typeof message}`);
    }
    return text;
  }

  _decode(data, isText) {
    if (this.type === "binary") return isText ? encoder.encode(data) : new Uint8Array(data);
    const text = isText ? data : decoder.decode(data);
    return this.type === "json" ? JSON.parse(text) : text;
  }

  // -- request and reply ---------------------------------------------------

  _ask(kind, body, feature, timeout, early = false) {
    if (!(this.connected || early)) {
      return Promise.reject(new ConnectionClosedError(`not connected to ${this.url}`));
    }
    if (!(feature in this.features)) {
      return Promise.reject(new NotNegotiatedError(
        `the hub did not agree to ${feature} (a plain connection, or declined)`));
    }
    const id = this._nextId;
    this._nextId = this._nextId >= 0xffffffff ? 1 : this._nextId + 1;
    return new Promise((resolve, reject) => {
      const pending = { resolve, reject, timer: null };
      if (timeout != null) {
        pending.timer = setTimeout(() => {
          this._pending.delete(id);
          reject(new RequestTimeoutError(`no answer within ${timeout} s`));
        }, timeout * 1000);
      }
      this._pending.set(id, pending);
      this._ws.send(withId(kind, id, body));
    });
  }

  _answer(kind, id, rest) {
    const pending = this._pending.get(id);
    if (!pending) return;  // late (timed out): dropped
    this._pending.delete(id);
    clearTimeout(pending.timer);
    if (kind === Kind.REPLY) { pending.resolve(rest); return; }
    let type = "Error", message = "";
    try { ({ type, message } = JSON.parse(decoder.decode(rest))); } catch { /* as is */ }
    pending.reject(new RemoteError(type, message));
  }

  async _requested(id, body) {
    const ws = this._ws;
    let reply;
    try {
      if (!this.onrequest) throw Object.assign(new Error("no request handler"), { name: "NoHandler" });
      reply = await this.onrequest(this._decode(body, false));
      const data = this._encode(reply === undefined ? null : reply);
      ws.send(withId(Kind.REPLY, id, typeof data === "string" ? encoder.encode(data) : data));
    } catch (error) {
      const text = JSON.stringify({ type: error?.name ?? "Error", message: String(error?.message ?? error) });
      if (ws.readyState === WebSocket.OPEN) ws.send(withId(Kind.ERROR, id, encoder.encode(text)));
    }
  }

  _emit(name, detail) {
    const handler = this["on" + name];
    if (handler) {
      try { handler.call(this, detail); } catch (error) { console.error(error); }
    }
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }
}

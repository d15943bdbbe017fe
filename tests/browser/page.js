// The browser tests' helpers, for a page of the tests' static server
// (page.html) or a document of the hub's own origin (the test adds it as
// an inline module there): it imports twcomms.js from the page's origin and
// keeps, per client it opens (open_client), what the client saw, for the
// tests to read with page.evaluate / page.wait_for_function.
import * as twcomms from "/twcomms.js";

// Messages as the tests compare them: a Uint8Array as {bytes: [...]}.
const plain = (m) => (m instanceof Uint8Array ? { bytes: Array.from(m) } : m);

window.twcomms = twcomms;
window.clients = {};

// Open a client named `name` with `options` (Client's), recording its
// messages and events; resolves once it is open (or rejects after
// `wait` ms), with what was agreed.
window.open_client = (name, options, wait = 8000) => {
  const client = new twcomms.Client(options);
  const seen = { client, messages: [], events: [] };
  client.onmessage = (m) => seen.messages.push(plain(m));
  for (const type of ["open", "close", "reconnecting"]) {
    client.addEventListener(type, (e) => seen.events.push({ type, detail: e.detail }));
  }
  window.clients[name] = seen;
  return open_of(name, wait);
};

// The client's current `opened` promise, bounded by `wait` ms.
window.open_of = (name, wait = 8000) => {
  const client = window.clients[name].client;
  return Promise.race([
    client.opened.then(() => ({ extended: client.extended, features: client.features })),
    new Promise((_, reject) => setTimeout(() => reject(new Error(
      `${name} not open within ${wait} ms`)), wait)),
  ]);
};

window.to_bytes = (array) => new Uint8Array(array);
window.ready = true;

// Reads one tenant's user events with the credential that
// `scimrelay subscriber add billing-users --subjects 'scimrelay.acme.user.>'` wrote.
import { readFileSync } from "node:fs";
import { connect, nkeyAuthenticator } from "nats";

const seed = readFileSync(process.env.SEED_FILE ?? "billing-users.nk", "utf8").trim();
const nc = await connect({
  servers: process.env.NATS_URL ?? "nats://127.0.0.1:4222",
  authenticator: nkeyAuthenticator(new TextEncoder().encode(seed)),
  inboxPrefix: "_INBOX_billing-users", // the subscriber's private inbox
  // Reconnect for ever, refused or not: through a relay restart, and when its
  // tenant is cut off and let in again (by default it gives up after 20 s).
  maxReconnectAttempts: -1,
  ignoreAuthErrorAbort: true,
  waitOnFirstConnect: true, // started before the relay (at boot), it waits for it
});
// The relay keeps a durable consumer named as the subscriber, filtered on its
// --subjects; it remembers where it got to across restarts.
const consumer = await nc.jetstream().consumers.get("SCIMRELAY", "billing-users");
const limit = Number(process.env.LIMIT ?? Infinity); // for the test: stop after LIMIT events
const messages = await consumer.consume();
// Stopped (SIGTERM, Ctrl-C): drain, not close. Draining the pull's
// subscription lets the events already pulled or on their way (up to 100)
// through the loop, then ends it; close() drops those on their way, which
// would come back only after ack_wait (30 s), behind later events of the
// same resources; nc.drain() here fails the acknowledgements of the
// events still in the loop. nats.js 2.29 gives the consumption no drain of
// its own: `sub` is its subscription. A second signal ends node at once.
for (const signal of ["SIGTERM", "SIGINT"]) process.once(signal, () => {
  messages.sub.drain().catch(() => {});
  // NATS away, nothing can be acknowledged: end after 10 s, not when it is back.
  setTimeout(() => nc.close(), 10_000).unref();
});
let n = 0;
for await (const m of messages) {
  const data = m.json(); // tenant, resourceType, id, resource, changes, member
  console.log(JSON.stringify({ id: m.headers.get("ce-id"), type: m.headers.get("ce-type"), userName: data.resource.userName }));
  m.ack(); // at-least-once: a repeat has the same ce-id
  if (++n >= limit) break;
}
if (!nc.isClosed()) await nc.drain().catch(() => {}); // sends the last acknowledgements before it closes

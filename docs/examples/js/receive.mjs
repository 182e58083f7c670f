// Receives a scimrelay sink's deliveries: binary mode, structured mode or
// batches. It verifies each with the sink's secret, then applies each event
// once and in order per resource (here: prints it as a JSON line).
import { createServer } from "node:http";
import { Webhook, WebhookVerificationError } from "standardwebhooks";

const secret = process.env.SCIMRELAY_RECEIVER_SECRET;
if (!secret) {
  console.error("SCIMRELAY_RECEIVER_SECRET is not set: give it the sink's secret (whsec_...)");
  process.exit(2);
}
const webhook = new Webhook(secret);
const maxBytes = 64 << 20; // 413 above: keep it over the sinks' batch max_bytes and the largest event (8 MiB)

// Kept in memory for the example; a real receiver keeps both in its database,
// updated in the same transaction as the change it applies.
const appliedIds = new Set(); // event ids: every retry and redelivery has the same one
// The highest subjectseq applied, per mark: a user (Users/<id>: its events
// carry the whole user), a group's own attributes (Groups/<id>: created,
// updated, deleted) and each member of a group (Groups/<id> and the member's
// id): a member event changes that member alone, and carries the group
// without its extensions, so it neither moves nor heeds the group's mark.
const appliedSeq = new Map();
const deletedGroups = new Set(); // Groups/<id> whose group.deleted was applied
const memberEvents = new Set(["io.scimrelay.group.member_added", "io.scimrelay.group.member_removed"]);

function apply(e) {
  if (typeof e?.id !== "string" || typeof e.subject !== "string" || !/^\d{1,20}$/.test(e.subjectseq ?? "")) {
    throw new Error("not a scimrelay event");
  }
  const seq = BigInt(e.subjectseq); // 20 digits: more than a Number holds exactly
  if (appliedIds.has(e.id)) return; // a repeat
  const member = memberEvents.has(e.type);
  const mark = member ? `${e.subject} ${e.data?.member?.value}` : e.subject;
  // An older change than one applied (a dead letter redriven after later
  // events of the resource were delivered): applying it would undo them.
  if (seq <= (appliedSeq.get(mark) ?? 0n)) return;
  if (member && deletedGroups.has(e.subject)) return; // the group is gone, its members with it
  if (e.type === "io.scimrelay.group.deleted") deletedGroups.add(e.subject);
  appliedIds.add(e.id);
  appliedSeq.set(mark, seq);
  const r = e.data?.resource ?? {};
  console.log(JSON.stringify({ id: e.id, type: e.type, subject: e.subject, subjectseq: e.subjectseq, userName: r.userName, displayName: r.displayName }));
}

// The events of a delivery, by its media type (parameters such as charset do
// not count, nor does case).
function eventsOf(headers, body) {
  switch ((headers["content-type"] ?? "").split(";")[0].trim().toLowerCase()) {
    case "application/cloudevents-batch+json": // structured events
      if (!Array.isArray(body)) throw new Error("a batch is a JSON array");
      return body;
    case "application/cloudevents+json": // structured mode: the whole event
      return [body];
    case "application/json": { // binary mode: ce-* headers (node lowercases names), percent-encoded, data as the body
      const ce = (name) => decodeURIComponent(headers["ce-" + name] ?? "");
      return [{ id: ce("id"), type: ce("type"), subject: ce("subject"), subjectseq: ce("subjectseq"), data: body }];
    }
    default:
      throw new Error(`unexpected Content-Type ${headers["content-type"]}`);
  }
}

function refuse(req, res, status, why) {
  console.error(`${status} ${req.method} ${req.url}: ${why}`);
  res.writeHead(status, { connection: "close" }).end();
}

createServer(async (req, res) => {
  if (req.method !== "POST") return refuse(req, res, 405, "POST only");
  // The raw bytes: the signature covers the body exactly as sent. Parsing and
  // re-serialising can change them (a structured body escapes &, < and > as
  // \u0026, \u003c and \u003e, JSON.stringify does not), and verification fails.
  const chunks = [];
  let size = 0;
  try {
    for await (const chunk of req) {
      if ((size += chunk.length) > maxBytes) return refuse(req, res, 413, `body over ${maxBytes} bytes`);
      chunks.push(chunk);
    }
  } catch (err) {
    // The sender went away mid-body (its timeout, a stop): that request
    // alone is lost, and the relay tries again. Uncaught, it ended node.
    return console.error(`${req.method} ${req.url}: body cut short: ${err.message}`);
  }
  let body;
  try {
    body = webhook.verify(Buffer.concat(chunks), req.headers); // the body parsed, once a signature matches
  } catch (err) {
    return refuse(req, res, err instanceof WebhookVerificationError ? 401 : 400, err.message);
  }
  try {
    eventsOf(req.headers, body).forEach(apply); // a batch in order: a resource's events follow each other
  } catch (err) {
    return refuse(req, res, 400, err.message);
  }
  res.writeHead(204).end(); // 2xx: the relay goes on to the resource's next event
}).listen(Number(process.env.PORT ?? 8000));

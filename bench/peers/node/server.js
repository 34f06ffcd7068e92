// Node.js peer for the side-by-side webhook benchmark (BENCHMARKS.md).
//
// An inbound Twilio SMS webhook as a Node shop would receive it: the official `twilio`
// package's `validateRequest` checks `X-Twilio-Signature`, then an in-memory conversation
// map (per contact: unread count, last message) is updated and a 200 answers. Node's own
// `http` module, one process (both in http.js).
//
// Usage: node server.js   (env BENCH_TWILIO_AUTH_TOKEN; listens on 127.0.0.1, a free port)
// Prints `peer listening on http://127.0.0.1:PORT` once it accepts connections.
// `GET /stats` answers what was acknowledged and what the map holds (conversations, messages).
'use strict';

const { serve, twiml } = require('./http');

/** Contact (E.164) -> { unread, last: { sid, body, at } } */
const conversations = new Map();
let acknowledged = 0;

function stats() {
  let messages = 0;
  for (const c of conversations.values()) messages += c.unread;
  return { acknowledged, conversations: conversations.size, messages };
}

function accept(params, raw, res) {
  const contact = params.From;
  const conversation = conversations.get(contact) || { unread: 0, last: null };
  conversation.unread += 1;
  conversation.last = { sid: params.MessageSid, body: params.Body, at: Date.now() };
  conversations.set(contact, conversation);
  acknowledged += 1;
  res.writeHead(200, { 'content-type': 'text/xml' }).end(twiml);
}

serve(accept, stats);

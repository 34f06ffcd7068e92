// Node.js peer for the side-by-side webhook benchmark (BENCHMARKS.md).
//
// An inbound Twilio SMS webhook as a Node shop would receive it: the official `twilio`
// package's `validateRequest` checks `X-Twilio-Signature`, then an in-memory conversation
// map (per contact: unread count, last message) is updated and a 200 answers. Node's own
// `http` module, one process.
//
// Usage: node server.js   (env BENCH_TWILIO_AUTH_TOKEN; listens on 127.0.0.1, a free port)
// Prints `peer listening on http://127.0.0.1:PORT` once it accepts connections.
// `GET /stats` answers what was acknowledged and what the map holds (conversations, messages).
'use strict';

const http = require('node:http');
const { validateRequest } = require('twilio');

const authToken = process.env.BENCH_TWILIO_AUTH_TOKEN;
if (!authToken) throw new Error('BENCH_TWILIO_AUTH_TOKEN is not set');
const twiml = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>';

/** Contact (E.164) -> { unread, last: { sid, body, at } } */
const conversations = new Map();
let acknowledged = 0;

function stats() {
  let messages = 0;
  for (const c of conversations.values()) messages += c.unread;
  return { acknowledged, conversations: conversations.size, messages };
}

function inbound(req, res, raw) {
  const params = Object.fromEntries(new URLSearchParams(raw));
  // The URL Twilio called: the one the bench signed.
  const url = `http://${req.headers.host}${req.url}`;
  const signature = req.headers['x-twilio-signature'] || '';
  if (!validateRequest(authToken, signature, url, params)) {
    res.writeHead(403, { 'content-type': 'text/plain' }).end('bad signature');
    return;
  }
  const contact = params.From;
  const conversation = conversations.get(contact) || { unread: 0, last: null };
  conversation.unread += 1;
  conversation.last = { sid: params.MessageSid, body: params.Body, at: Date.now() };
  conversations.set(contact, conversation);
  acknowledged += 1;
  res.writeHead(200, { 'content-type': 'text/xml' }).end(twiml);
}

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/stats') {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(stats()));
    return;
  }
  if (req.method !== 'POST' || req.url !== '/webhooks/twilio') {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => inbound(req, res, Buffer.concat(chunks).toString()));
});

server.listen(0, '127.0.0.1', 1024, () => {
  console.log(`peer listening on http://127.0.0.1:${server.address().port}`);
});

// What the Node.js peers share (BENCHMARKS.md): Node's own `http` module, one process, and
// the official `twilio` package's `validateRequest` on `X-Twilio-Signature`.
//
// `serve(accept, stats)`: `POST /webhooks/twilio` with a valid signature calls
// `accept(params, rawBody, res)`, which stores the webhook and answers; a bad signature gets a
// 403. `GET /stats` answers `stats()` as JSON; anything else is a 404. The auth token is
// BENCH_TWILIO_AUTH_TOKEN. Listens on 127.0.0.1, a free port, and prints
// `peer listening on http://127.0.0.1:PORT` once it accepts connections (the bench waits for
// that line).
'use strict';

const http = require('node:http');
const { validateRequest } = require('twilio');

const authToken = process.env.BENCH_TWILIO_AUTH_TOKEN;
if (!authToken) throw new Error('BENCH_TWILIO_AUTH_TOKEN is not set');

/** Empty TwiML: what Twilio expects in answer to an inbound message. */
const twiml = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>';

function inbound(req, res, raw, accept) {
  const params = Object.fromEntries(new URLSearchParams(raw));
  // The URL Twilio called: the one the bench signed.
  const url = `http://${req.headers.host}${req.url}`;
  const signature = req.headers['x-twilio-signature'] || '';
  if (!validateRequest(authToken, signature, url, params)) {
    res.writeHead(403, { 'content-type': 'text/plain' }).end('bad signature');
    return;
  }
  accept(params, raw, res);
}

function serve(accept, stats) {
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
    req.on('end', () => inbound(req, res, Buffer.concat(chunks).toString(), accept));
  });
  server.listen(0, '127.0.0.1', 1024, () => {
    console.log(`peer listening on http://127.0.0.1:${server.address().port}`);
  });
}

module.exports = { serve, twiml };

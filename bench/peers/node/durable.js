// Durable Node.js peer for the side-by-side webhook benchmark (BENCHMARKS.md).
//
// What Omni does before it answers a carrier, as a Node shop would write it: the official
// `twilio` package's `validateRequest` checks `X-Twilio-Signature`, then the raw webhook is
// committed to SQLite with `better-sqlite3` (WAL, synchronous=FULL: the commit is fsync'd, so
// a 200 survives a crash or a power loss), deduplicated on the MessageSid, and only then a
// 200 answers. Node's own `http` module, one process (both in http.js); one prepared INSERT
// per webhook, each its own transaction (better-sqlite3's API is synchronous).
//
// Usage: node durable.js   (env BENCH_TWILIO_AUTH_TOKEN, BENCH_PEER_DB: the database file;
// listens on 127.0.0.1, a free port)
// Prints `peer listening on http://127.0.0.1:PORT` once it accepts connections.
// `GET /stats` answers what was acknowledged and what the table holds (messages).
'use strict';

const Database = require('better-sqlite3');
const { serve, twiml } = require('./http');

const dbPath = process.env.BENCH_PEER_DB;
if (!dbPath) throw new Error('BENCH_PEER_DB is not set');

const db = new Database(dbPath);
db.pragma('journal_mode = WAL');
db.pragma('synchronous = FULL');
db.exec(`CREATE TABLE IF NOT EXISTS raw_webhooks (
  message_sid TEXT PRIMARY KEY,
  account_sid TEXT NOT NULL,
  from_number TEXT NOT NULL,
  to_number   TEXT NOT NULL,
  body        TEXT NOT NULL,
  received_at TEXT NOT NULL
)`);
const insert = db.prepare(`INSERT INTO raw_webhooks
  (message_sid, account_sid, from_number, to_number, body, received_at)
  VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (message_sid) DO NOTHING`);
const count = db.prepare('SELECT count(*) AS n FROM raw_webhooks').pluck();

let acknowledged = 0;

function accept(params, raw, res) {
  if (!params.MessageSid || !params.From || !params.To) {
    res.writeHead(400, { 'content-type': 'text/plain' }).end('missing fields');
    return;
  }
  try {
    // Committed (and fsync'd) when run() returns; a redelivery is acknowledged, not stored.
    insert.run(params.MessageSid, params.AccountSid || '', params.From, params.To, raw,
      new Date().toISOString());
  } catch (err) {
    console.error('store failed:', err.message);
    res.writeHead(500, { 'content-type': 'text/plain' }).end('store failed');
    return;
  }
  acknowledged += 1;
  res.writeHead(200, { 'content-type': 'text/xml' }).end(twiml);
}

serve(accept, () => ({ acknowledged, messages: count.get() }));

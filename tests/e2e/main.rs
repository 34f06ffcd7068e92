//! End-to-end tests: the real `omni` binary, real SQLite, carrier fakes over HTTP.

mod abuse;
mod api;
mod delivery;
mod failover;
mod flows;
mod harness;
mod signal;
mod smoke;
mod telnyx;
mod voicemeup;
mod whatsapp;

//! End-to-end tests: the real `omni` binary, real SQLite, carrier fakes over HTTP.

mod abuse;
mod api;
mod bandwidth;
mod bird;
mod delivery;
mod email;
mod event_webhooks;
mod failover;
mod flows;
mod harness;
mod inteliquent;
mod livechat;
mod messagebird;
mod security;
mod ses;
mod signal;
mod sinch;
mod smoke;
mod sns_signer;
mod team;
mod telnyx;
mod templates;
mod voicemeup;
mod vonage;
mod waba;
mod whatsapp;

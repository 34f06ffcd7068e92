//! Omni's core: the domain, the carrier adapters, the ports the backends implement, and the
//! services that run the inbound, outbound and status flows.
//!
//! Nothing here knows whether it runs on AWS Lambda or in `omni serve`: storage, queues and
//! push are traits in [`ports`], implemented by the `omni-local` (SQLite) and AWS backends.

pub mod autoreply;
pub mod domain;
pub mod livechat;
pub mod model;
pub mod ports;
pub mod providers;
pub mod service;
pub mod sms;
pub mod team;
pub mod template;
pub mod templates;
pub mod waba;
pub mod webhook;

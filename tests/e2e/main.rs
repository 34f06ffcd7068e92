//! End-to-end tests: the real `omni` binary, real SQLite, carrier fakes over HTTP.

mod harness;
mod smoke;

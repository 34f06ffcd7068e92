//! Robustness suites run in process over the real axum routers and an in-memory SQLite
//! backend: duplicated, shuffled webhook delivery (`replay`).

mod replay;
mod world;

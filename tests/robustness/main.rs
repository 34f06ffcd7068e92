//! Robustness suites run in process over the real axum routers and an in-memory SQLite
//! backend: property-based fuzzing of every webhook parser and signature verifier and of the
//! send API's JSON (`fuzz`), and duplicated, shuffled webhook delivery (`replay`).

mod fuzz;
mod mutate;
mod replay;
#[path = "../e2e/sns_signer.rs"]
mod sns_signer;
mod world;

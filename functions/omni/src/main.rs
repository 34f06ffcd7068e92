//! `omni`: the self-hosted Omni server and its command-line tools.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod config;
mod demo;
mod runner;
mod serve;
mod webhook_cli;

/// Omni: one messaging layer for SMS, MMS, WhatsApp, RCS and Signal across carriers.
#[derive(Parser)]
#[command(name = "omni", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up: the size of the larger variant (a URL per carrier) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the whole platform in one process on SQLite.
    Serve(config::ServeConfig),
    /// Carrier-side tools for demos and carrier-less testing.
    #[command(subcommand)]
    Webhook(webhook_cli::WebhookCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("omni: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(config) => serve::run(config).await,
            Command::Webhook(command) => webhook_cli::run(command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("omni: {e}");
            ExitCode::FAILURE
        }
    }
}

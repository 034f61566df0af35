//! `roomcast`: parse settings, set up logging, run the broker until SIGINT or
//! SIGTERM.

use clap::Parser;
use mimalloc::MiMalloc;
use roomcast::config::{Cli, Command, Config};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::PrintConfig) = cli.command {
        print!("{}", Config::example_toml());
        return std::process::ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match Config::resolve(cli.settings, cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("roomcast: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("roomcast: cannot start: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        // Installed before the node starts: once the "listening" line is
        // out, a SIGTERM drains the node. Installed lazily (on the future's
        // first poll, after that line), a SIGTERM sent at once killed the
        // process without a close frame to anyone.
        let shutdown = shutdown_signal()
            .map_err(|error| format!("cannot install the signal handlers: {error}"))?;
        roomcast::run(config, shutdown)
            .await
            .map_err(|error| error.to_string())
    });
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("roomcast: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Installs the SIGINT and SIGTERM handlers now (inside the runtime); the
/// future resolves on the first of them.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

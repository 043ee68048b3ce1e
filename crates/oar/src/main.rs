//! `oar`: the Oar manager binary.

mod cache;
mod cli;
mod commands;
mod exec;
mod http;
mod job;
mod kube_job;
mod manager;
mod metrics;
mod signals;
mod slots;
mod system_id;

use clap::Parser;
use cli::{Cli, Command, Format, Level};
use std::process::ExitCode;
use tracing_subscriber::prelude::*;

/// Oar's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Source revision (set OAR_REVISION at build time).
pub const REVISION: &str = match option_env!("OAR_REVISION") {
    Some(r) => r,
    None => "unknown",
};

fn init_logging(cli: &Cli, metrics: &metrics::Metrics) {
    let level = if cli.debug {
        "debug"
    } else {
        match cli.log_level {
            Some(Level::Debug) => "debug",
            Some(Level::Warn) => "warn",
            Some(Level::Error | Level::Fatal | Level::Panic) => "error",
            Some(Level::Info) => "info",
            // `oar exec` talks to a person through the jobs' output and its summary; the
            // runner's own log shows only what goes wrong, unless asked for.
            None if matches!(cli.command, Command::Exec(_)) => "warn",
            None => "info",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("OAR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let errors = metrics::ErrorCounter::new(metrics);
    let registry = tracing_subscriber::registry().with(filter).with(errors);
    if cli.log_format == Some(Format::Json) {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .init();
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init();
    }
}

async fn run(cli: Cli, metrics: metrics::Metrics) -> anyhow::Result<ExitCode> {
    let done = match cli.command {
        Command::Exec(a) => return exec::exec(*a, metrics).await,
        Command::Register(a) => commands::register(*a).await,
        Command::Verify(a) => commands::verify(a).await,
        Command::Unregister(a) => commands::unregister(a).await,
        Command::List(c) => commands::list(&c.config),
        Command::RunSingle(a) => commands::run_single(*a, metrics).await,
        Command::Run(a) => {
            let loaded = oar_config::load(&a.config.config)?;
            let listen = a
                .listen_address
                .clone()
                .or(loaded.config.listen_address.clone());
            let system_id = system_id::load_or_create(&a.config.config)?;
            let readiness = http::Readiness::default();
            let server_stop = tokio_util::sync::CancellationToken::new();
            if let Some(addr) = listen {
                let listener = http::bind(&addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
                tracing::info!(address = %listener.local_addr()?, "metrics and health server listening");
                let stop = server_stop.clone();
                let (m, r) = (metrics.clone(), readiness.clone());
                tokio::spawn(async move {
                    if let Err(e) =
                        http::serve(listener, m, r, async move { stop.cancelled().await }).await
                    {
                        tracing::error!(error = %e, "metrics server failed");
                    }
                });
            }
            let working_dir = match a.working_directory {
                Some(d) => d,
                None => std::env::current_dir()?,
            };
            let opts = manager::ManagerOptions {
                config_path: a.config.config.clone(),
                working_dir,
                version: VERSION.into(),
                revision: REVISION.into(),
                reload_interval: std::time::Duration::from_secs(3),
            };
            let result =
                manager::run(opts, metrics, readiness, system_id, std::future::pending()).await;
            server_stop.cancel();
            result
        }
    };
    done.map(|()| ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let metrics = metrics::Metrics::new(VERSION, REVISION);
    init_logging(&cli, &metrics);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("oar: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli, metrics)) {
        Ok(code) => code,
        Err(e) => {
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("oar: {e:#}");
            ExitCode::from(1)
        }
    }
}

//! `fake-gitlab`: the test kit's [`FakeGitlab`] as a standalone server, for shell scripts, Helm
//! chart tests, benchmarks, or trying Oar without a GitLab. It serves the runner API and git
//! smart HTTP like the in-process fake, plus the JSON admin API under `/_fake/` (the crate's
//! README documents both, and the lines printed on start).
//!
//! Exit codes: 0 after a clean stop (SIGINT/SIGTERM) or `--help`, 64 for a usage error, 1 when
//! the server cannot start.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use oar_testkit::{FakeGitlab, StartOptions, TlsOptions};

/// A stateful fake GitLab (runner API, git smart HTTP, `/_fake/` admin API).
#[derive(Debug, Parser)]
#[command(name = "fake-gitlab", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve until SIGINT or SIGTERM.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the printed `url=` has the real one).
    #[arg(long, env = "FAKE_GITLAB_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,

    /// Directory for repositories, artifact copies and TLS files: created if missing, kept
    /// after exit, and its repositories are served again on the next start. Default: a temp
    /// dir removed at exit.
    #[arg(long, env = "FAKE_GITLAB_STATE_DIR")]
    state_dir: Option<PathBuf>,

    /// Serve HTTPS with a certificate from a CA generated at start (printed as `ca_file=`).
    #[arg(long)]
    tls: bool,

    /// With --tls, require client certificates (printed as `client_cert_file=` and
    /// `client_key_file=`).
    #[arg(long, requires = "tls")]
    tls_client_cert: bool,

    /// Authentication token of the runner created at start. Default: a random `glrt-…`.
    #[arg(long, env = "FAKE_GITLAB_RUNNER_TOKEN", value_parser = token)]
    runner_token: Option<String>,

    /// Legacy registration token accepted by `POST /api/v4/runners`. Default: a random
    /// `GR1348941…`.
    #[arg(long, env = "FAKE_GITLAB_REGISTRATION_TOKEN", value_parser = token)]
    registration_token: Option<String>,

    /// Host name or IP put into the URLs handed out (`repo_url`, `CI_SERVER_URL`, ...) and the
    /// TLS certificate. Default: the listening IP, or 127.0.0.1 when listening on 0.0.0.0.
    #[arg(long, env = "FAKE_GITLAB_PUBLIC_HOST")]
    public_host: Option<String>,
}

/// A token argument: non-empty, no whitespace or control characters.
fn token(s: &str) -> Result<String, String> {
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be non-empty, without spaces or control characters".into());
    }
    Ok(s.to_owned())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 64 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fake-gitlab: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let Command::Serve(args) = cli.command;
    let outcome = runtime.block_on(serve(args));
    // Blocking work (git) still running must not hold the exit up for long.
    runtime.shutdown_timeout(Duration::from_secs(5));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-gitlab: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Logs to stderr; `RUST_LOG` filters (default `info`; `oar_testkit=debug` shows every
/// request).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .init();
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Before anything is printed: a SIGTERM right after the ready line must stop us cleanly.
    let mut signals = Signals::install().context("installing the signal handlers")?;
    let (temp, state_dir) = match &args.state_dir {
        Some(dir) => (None, dir.clone()),
        None => {
            let t = tempfile::Builder::new()
                .prefix("fake-gitlab-")
                .tempdir()
                .context("creating the temp state directory")?;
            let path = t.path().to_owned();
            (Some(t), path)
        }
    };
    let options = StartOptions {
        addr: Some(args.addr),
        tls: args.tls.then_some(TlsOptions {
            require_client_cert: args.tls_client_cert,
        }),
        state_dir: Some(state_dir),
        public_host: args.public_host.clone(),
        admin_api: true,
    };
    let gitlab = FakeGitlab::start_with(options)
        .await
        .with_context(|| format!("starting the fake GitLab on {}", args.addr))?;
    let runner = match &args.runner_token {
        Some(t) => {
            let id = gitlab.add_runner(t);
            (id, t.clone())
        }
        None => {
            let r = gitlab.create_runner();
            (r.id, r.token)
        }
    };
    let registration_token = match &args.registration_token {
        Some(t) => {
            gitlab.add_registration_token(t);
            t.clone()
        }
        None => gitlab.create_registration_token(),
    };
    announce(&gitlab, runner, &registration_token);
    tracing::info!(url = %gitlab.url(), "fake GitLab ready");

    let signal = signals.recv().await;
    tracing::info!(signal, "stopping");
    gitlab.shutdown();
    drop(gitlab);
    if let Some(t) = temp {
        let path = t.path().to_owned();
        t.close()
            .with_context(|| format!("removing the temp state directory {}", path.display()))?;
    }
    Ok(())
}

/// The machine-readable `key=value` lines, then one human line (without `=`). A closed stdout
/// is not fatal: the server keeps serving.
fn announce(gitlab: &FakeGitlab, (runner_id, runner_token): (i64, String), registration: &str) {
    let url = format!("{}/", gitlab.url());
    let mut lines = vec![
        format!("url={url}"),
        format!("admin_url={url}_fake/"),
        format!("runner_id={runner_id}"),
        format!("runner_token={runner_token}"),
        format!("registration_token={registration}"),
        format!("state_dir={}", gitlab.state_dir().display()),
    ];
    if let Some(ca) = gitlab.ca_pem_path() {
        lines.push(format!("ca_file={}", ca.display()));
    }
    if let (Some(cert), Some(key)) = (gitlab.client_cert_pem_path(), gitlab.client_key_pem_path()) {
        lines.push(format!("client_cert_file={}", cert.display()));
        lines.push(format!("client_key_file={}", key.display()));
    }
    lines.push(format!(
        "Fake GitLab ready on {url} (admin API under {url}_fake/). Stop it with Ctrl-C or SIGTERM."
    ));
    let mut out = std::io::stdout().lock();
    let written = lines
        .iter()
        .try_for_each(|l| writeln!(out, "{l}"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        tracing::warn!(error = %e, "could not print the start lines to stdout");
    }
}

/// SIGINT and SIGTERM, registered at once.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    #[cfg(not(unix))]
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {})
    }

    /// The name of the first signal received.
    #[cfg(unix)]
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }

    #[cfg(not(unix))]
    async fn recv(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

//! The global section of `config.toml` and the whole-file domain type [`Config`].

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::path::KeyPath;
use crate::runner::{RunnerConfig, RunnerWire};
use crate::serde_util::RawDuration;
use crate::validate::{Ctx, Issue, go_duration, non_empty, non_negative, one_of, seconds_or};
use crate::warning::WarningKind;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ConfigWire {
    concurrent: Option<i64>,
    check_interval: Option<i64>,
    log_level: Option<String>,
    log_format: Option<String>,
    listen_address: Option<String>,
    shutdown_timeout: Option<i64>,
    connection_max_age: Option<RawDuration>,
    sentry_dsn: Option<SecretString>,
    session_server: Option<SessionServerWire>,
    user: Option<String>,
    runners: Vec<RunnerWire>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SessionServerWire {
    listen_address: Option<String>,
    advertise_address: Option<String>,
    session_timeout: Option<i64>,
}

/// `log_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// `trace`.
    Trace,
    /// `debug`.
    Debug,
    /// `info` (GitLab Runner's default).
    Info,
    /// `warn` or `warning`.
    Warn,
    /// `error`.
    Error,
    /// `fatal`.
    Fatal,
    /// `panic`.
    Panic,
}

/// `log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `runner`: colored, human-oriented (GitLab Runner's default).
    Runner,
    /// `text`: logfmt-style key=value lines.
    Text,
    /// `json`: one JSON object per line.
    Json,
}

/// `[session_server]` (accepted; Oar has no interactive web terminal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionServer {
    /// `listen_address`: setting it enables the session server upstream.
    pub listen_address: Option<String>,
    /// `advertise_address`.
    pub advertise_address: Option<String>,
    /// `session_timeout` in seconds. Default 1800 (also for 0).
    pub session_timeout: Duration,
}

/// A whole `config.toml`, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// `concurrent`: jobs running at once across all runners. Default 1 (0 is read as 1, with
    /// a warning).
    pub concurrent: u32,
    /// `check_interval`: seconds between job requests per runner. Default 3 (also for 0).
    pub check_interval: Duration,
    /// `log_level`. Default: unset (info).
    pub log_level: Option<LogLevel>,
    /// `log_format`. Default: unset (runner).
    pub log_format: Option<LogFormat>,
    /// `listen_address`: `host:port` of the metrics and health server. Default: unset (off).
    pub listen_address: Option<String>,
    /// `shutdown_timeout` in seconds: how long a forceful shutdown may take. Default 30 (also
    /// for 0).
    pub shutdown_timeout: Duration,
    /// `connection_max_age`: recycle connections to GitLab after this long. Default 15m;
    /// `"0"` disables recycling (`None`).
    pub connection_max_age: Option<Duration>,
    /// `sentry_dsn` (accepted, not used by Oar).
    pub sentry_dsn: Option<SecretString>,
    /// `[session_server]` (accepted, not used by Oar).
    pub session_server: Option<SessionServer>,
    /// `user`: the user the shell executor runs jobs as. Default: unset (the runner's user).
    pub user: Option<String>,
    /// `[[runners]]`.
    pub runners: Vec<RunnerConfig>,
}

/// GitLab Runner's defaults.
impl Default for Config {
    fn default() -> Self {
        Self {
            concurrent: 1,
            check_interval: Duration::from_secs(3),
            log_level: None,
            log_format: None,
            listen_address: None,
            shutdown_timeout: Duration::from_secs(30),
            connection_max_age: Some(Duration::from_secs(15 * 60)),
            sentry_dsn: None,
            session_server: None,
            user: None,
            runners: Vec::new(),
        }
    }
}

impl Config {
    /// The runner with this name, if any (the first one when names repeat).
    pub fn runner(&self, name: &str) -> Option<&RunnerConfig> {
        self.runners.iter().find(|r| r.name == name)
    }

    pub(crate) fn from_wire(wire: ConfigWire, ctx: &mut Ctx) -> Result<Self, Issue> {
        let root = KeyPath::root();
        let defaults = Config::default();
        let concurrent_key = root.key("concurrent");
        let concurrent = match non_negative::<u32>(&concurrent_key, wire.concurrent)? {
            None => defaults.concurrent,
            Some(0) => {
                ctx.warn(
                    &concurrent_key,
                    WarningKind::Suspicious,
                    "concurrent = 0 would run no jobs; using 1",
                );
                1
            }
            Some(n) => n,
        };
        let log_level = one_of(
            &root.key("log_level"),
            wire.log_level.as_deref(),
            &[
                ("trace", LogLevel::Trace),
                ("debug", LogLevel::Debug),
                ("info", LogLevel::Info),
                ("warn", LogLevel::Warn),
                ("warning", LogLevel::Warn),
                ("error", LogLevel::Error),
                ("fatal", LogLevel::Fatal),
                ("panic", LogLevel::Panic),
            ],
            true,
        )?;
        let log_format = one_of(
            &root.key("log_format"),
            wire.log_format.as_deref(),
            &[
                ("runner", LogFormat::Runner),
                ("text", LogFormat::Text),
                ("json", LogFormat::Json),
            ],
            false,
        )?;
        let connection_max_age = match &wire.connection_max_age {
            None => defaults.connection_max_age,
            Some(raw) => {
                Some(go_duration(&root.key("connection_max_age"), raw)?).filter(|d| !d.is_zero())
            }
        };
        let sentry_dsn = wire.sentry_dsn.filter(|s| !s.expose_secret().is_empty());
        if sentry_dsn.is_some() {
            ctx.warn(
                &root.key("sentry_dsn"),
                WarningKind::NotImplemented,
                "sentry_dsn ignored: Oar does not report errors to Sentry",
            );
        }
        let session_server = wire
            .session_server
            .map(|s| session_server(s, &root.key("session_server"), ctx))
            .transpose()?;
        let runners_key = root.key("runners");
        let runners = wire
            .runners
            .into_iter()
            .enumerate()
            .map(|(i, r)| RunnerConfig::from_wire(r, &runners_key.index(i), ctx))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            concurrent,
            check_interval: seconds_or(
                &root.key("check_interval"),
                wire.check_interval,
                defaults.check_interval,
            )?,
            log_level,
            log_format,
            listen_address: non_empty(wire.listen_address),
            shutdown_timeout: seconds_or(
                &root.key("shutdown_timeout"),
                wire.shutdown_timeout,
                defaults.shutdown_timeout,
            )?,
            connection_max_age,
            sentry_dsn,
            session_server,
            user: non_empty(wire.user),
            runners,
        })
    }
}

fn session_server(
    wire: SessionServerWire,
    path: &KeyPath,
    ctx: &mut Ctx,
) -> Result<SessionServer, Issue> {
    let server = SessionServer {
        listen_address: non_empty(wire.listen_address),
        advertise_address: non_empty(wire.advertise_address),
        session_timeout: seconds_or(
            &path.key("session_timeout"),
            wire.session_timeout,
            Duration::from_secs(1800),
        )?,
    };
    // GitLab Runner writes `[session_server] session_timeout = 1800` into every new file; only
    // an address actually turns the session server on.
    if server.listen_address.is_some() || server.advertise_address.is_some() {
        ctx.warn(
            path,
            WarningKind::NotImplemented,
            "session_server ignored: Oar has no interactive web terminal",
        );
    }
    Ok(server)
}

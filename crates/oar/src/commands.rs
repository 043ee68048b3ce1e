//! `register`, `verify`, `unregister`, `list`, `run-single`.

use crate::cli::{RegisterArgs, RunSingleArgs, UnregisterArgs, VerifyArgs};
use crate::job::{self, JobEnv};
use crate::manager::{client_for, info_for};
use crate::metrics::Metrics;
use crate::{REVISION, VERSION};
use anyhow::{Context, bail};
use oar_config::{
    ConfigDocument, ExposeSecret, NewKubernetes, NewRunner, RunnerConfig, SecretString,
};
use oar_gitlab::{
    Client, ClientConfig, JobRequest, JobRequestOutcome, RegisterRunnerRequest, Token,
    VerifyRunnerRequest,
};
use oar_job::report::ReporterConfig;
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn parse_time(s: Option<&str>) -> Option<time::OffsetDateTime> {
    let s = s?.trim();
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    (t.year() > 1).then_some(t)
}

fn now() -> time::OffsetDateTime {
    let t = time::OffsetDateTime::now_utc();
    t.replace_nanosecond(0).unwrap_or(t)
}

/// `oar register`.
pub async fn register(a: RegisterArgs) -> anyhow::Result<()> {
    let url = a
        .conn
        .url
        .clone()
        .context("--url (CI_SERVER_URL) is required")?;
    let executor = match a.executor.as_deref() {
        Some("shell") => oar_config::Executor::Shell,
        Some("kubernetes") => oar_config::Executor::Kubernetes,
        Some(other) => {
            bail!("executor {other:?} is not supported by Oar (use shell or kubernetes)")
        }
        None => bail!("--executor (RUNNER_EXECUTOR) is required: shell or kubernetes"),
    };
    let system_id = crate::system_id::load_or_create(&a.config.config)?;
    let client = Client::new(&ClientConfig {
        url: url.clone(),
        tls_ca_file: a.conn.tls_ca_file.clone(),
        tls_cert_file: a.conn.tls_cert_file.clone(),
        tls_key_file: a.conn.tls_key_file.clone(),
        version: VERSION.into(),
    })?;
    let shell = a.shell.clone().unwrap_or_default();
    let info = oar_gitlab::info::version_info(
        VERSION,
        REVISION,
        executor.as_str(),
        if shell.is_empty() { "bash" } else { &shell },
    );
    let name = a.name.clone().unwrap_or_else(hostname);
    let (token, registration_token) = tokens(&a)?;
    let cache_access_key = secret_arg(
        &a.cache_s3_access_key,
        &a.cache_s3_access_key_file,
        "--cache-s3-access-key-file",
    )?;
    let cache_secret_key = secret_arg(
        &a.cache_s3_secret_key,
        &a.cache_s3_secret_key_file,
        "--cache-s3-secret-key-file",
    )?;
    if cache_access_key.is_some() != cache_secret_key.is_some() {
        bail!(
            "--cache-s3-access-key and --cache-s3-secret-key (CACHE_S3_ACCESS_KEY / CACHE_S3_SECRET_KEY, or their -file forms) go together"
        );
    }
    let template = match &a.template_config {
        Some(p) => Some(
            ConfigDocument::open(p)
                .with_context(|| format!("reading --template-config {}", p.display()))?,
        ),
        None => None,
    };
    let details = match (&token, &registration_token) {
        (Some(token), _) => {
            let server_side = [
                ("--tag-list", a.tag_list.is_some()),
                ("--run-untagged", a.run_untagged.is_some()),
                ("--locked", a.locked.is_some()),
                ("--access-level", a.access_level.is_some()),
                ("--maximum-timeout", a.maximum_timeout.is_some()),
                ("--paused", a.paused.is_some()),
                ("--maintenance-note", a.maintenance_note.is_some()),
            ];
            if let Some((flag, _)) = server_side.iter().find(|(_, set)| *set) {
                bail!(
                    "{flag} cannot be used with a runner authentication token: that setting lives in GitLab now"
                );
            }
            let req = VerifyRunnerRequest {
                token: Token::new(token),
                system_id: system_id.clone(),
                info,
            };
            let mut d = client
                .verify_runner(&req)
                .await
                .context("verifying the runner token")?;
            if d.token.is_empty() {
                d.token = Token::new(token);
            }
            d
        }
        (None, Some(reg)) => {
            let req = RegisterRunnerRequest {
                token: Token::new(reg),
                description: name.clone(),
                maintenance_note: a.maintenance_note.clone().unwrap_or_default(),
                tag_list: a.tag_list.clone().unwrap_or_default(),
                run_untagged: a
                    .run_untagged
                    .unwrap_or(a.tag_list.as_deref().unwrap_or("").is_empty()),
                locked: a.locked.unwrap_or(true),
                access_level: a.access_level.clone().unwrap_or_default(),
                maximum_timeout: a.maximum_timeout.unwrap_or(0),
                paused: a.paused.unwrap_or(false),
                info,
            };
            client
                .register_runner(&req)
                .await
                .context("registering the runner")?
        }
        (None, None) => bail!("--token (a glrt- runner token) or --registration-token is required"),
    };
    // A new config.toml made from a template starts from the template's globals
    // (concurrent, check_interval, ...), not from the defaults of a new file.
    let mut doc = if template.is_some() && !a.config.config.exists() {
        ConfigDocument::parse("", &a.config.config)?
    } else {
        ConfigDocument::open_or_default(&a.config.config)?
    };
    // The same runner (token and URL) is listed once: registering again, as a restarted
    // init container does, replaces its entry.
    let same_url = |u: &str| u.trim_end_matches('/') == url.trim_end_matches('/');
    let replaced = doc
        .remove_runners(|r| r.token.expose_secret() == details.token.expose() && same_url(&r.url));
    if replaced > 0 {
        println!(
            "Replacing the entry of this runner already in {}",
            a.config.config.display()
        );
    }
    let mut new = NewRunner::new(
        name.clone(),
        url,
        details.id,
        SecretString::from(details.token.expose().to_string()),
        now(),
        executor,
    );
    new.token_expires_at = parse_time(details.token_expires_at.as_deref());
    new.limit = a.limit;
    new.request_concurrency = a.request_concurrency;
    new.tls_ca_file = a.conn.tls_ca_file.clone();
    new.tls_cert_file = a.conn.tls_cert_file.clone();
    new.tls_key_file = a.conn.tls_key_file.clone();
    new.builds_dir = a.builds_dir.clone();
    new.cache_dir = a.cache_dir.clone();
    new.environment = a.env.clone();
    new.shell = a.shell.clone();
    new.cache_s3_access_key = cache_access_key.map(SecretString::from);
    new.cache_s3_secret_key = cache_secret_key.map(SecretString::from);
    if executor == oar_config::Executor::Kubernetes {
        new.kubernetes = Some(NewKubernetes {
            namespace: a.kubernetes_namespace.clone(),
            image: a.kubernetes_image.clone(),
            helper_image: a.kubernetes_helper_image.clone(),
            ..NewKubernetes::default()
        });
    }
    match &template {
        Some(t) => doc.append_runner_with_template(&new, t)?,
        None => doc.append_runner(&new)?,
    }
    doc.validate().with_context(|| {
        format!(
            "the registered configuration would not load{}",
            if template.is_some() {
                " (check --template-config)"
            } else {
                ""
            }
        )
    })?;
    doc.save()?;
    println!(
        "Runner registered successfully. Config saved in {} (runner {:?}, id {}).",
        a.config.config.display(),
        name,
        details.id
    );
    Ok(())
}

/// The runner token and the legacy registration token, from flags, environment or files.
///
/// A token source that is given but yields nothing (a missing or empty file) is an error,
/// unless the other kind of token is there: the Helm chart mounts a Secret with both keys,
/// one of them usually empty, and passes both files. A `glrt-` token given as the
/// registration token is used as the runner token, as GitLab Runner does.
fn tokens(a: &RegisterArgs) -> anyhow::Result<(Option<String>, Option<String>)> {
    let token = match (&a.token, &a.token_file) {
        (Some(t), _) => Some(Ok(t.clone())),
        (None, Some(f)) => Some(read_token_file(f, "--token-file")?),
        (None, None) => None,
    };
    let registration = match (&a.registration_token, &a.registration_token_file) {
        (Some(t), _) => Some(Ok(t.clone())),
        (None, Some(f)) => Some(read_token_file(f, "--registration-token-file")?),
        (None, None) => None,
    };
    let (token, registration) = match (token, registration) {
        (Some(Ok(t)), _) => (Some(t), None),
        (None | Some(Err(_)), Some(Ok(r))) => (None, Some(r)),
        (Some(Err(why)), Some(Err(other))) => bail!("no token: {why}, and {other}"),
        (Some(Err(why)), None) | (None, Some(Err(why))) => bail!("{why}"),
        (None, None) => (None, None),
    };
    Ok(match (token, registration) {
        (None, Some(r)) if is_created_runner_token(&r) => {
            tracing::warn!(
                "the registration token is a runner authentication token (glrt-): verifying it instead of registering"
            );
            (Some(r), None)
        }
        other => other,
    })
}

/// A token from a file: surrounding whitespace (a trailing newline) removed. `Ok(Err(why))`
/// when the file is missing or empty; an error when it cannot be read.
fn read_token_file(path: &Path, flag: &str) -> anyhow::Result<Result<String, String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Err(format!("{flag} {}: no such file", path.display())));
        }
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("{flag} {}: cannot read the token", path.display())));
        }
    };
    let token = text.trim();
    if token.is_empty() {
        return Ok(Err(format!("{flag} {}: the file is empty", path.display())));
    }
    Ok(Ok(token.to_string()))
}

/// A secret from its flag (or environment variable) or from its file, which must not be empty.
fn secret_arg(
    value: &Option<String>,
    file: &Option<std::path::PathBuf>,
    flag: &str,
) -> anyhow::Result<Option<String>> {
    match (value, file) {
        (Some(v), _) => Ok(Some(v.clone())),
        (None, Some(f)) => match read_token_file(f, flag)? {
            Ok(v) => Ok(Some(v)),
            Err(why) => bail!("{why}"),
        },
        (None, None) => Ok(None),
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "oar".into())
}

/// `oar verify`.
pub async fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    let loaded = oar_config::load(&a.config.config)?;
    let system_id = crate::system_id::load_or_create(&a.config.config)?;
    let mut invalid = Vec::new();
    for r in loaded
        .config
        .runners
        .iter()
        .filter(|r| a.name.as_deref().is_none_or(|n| n == r.name))
    {
        let client = client_for(r, VERSION)?;
        let req = VerifyRunnerRequest {
            token: Token::new(r.token.expose_secret()),
            system_id: system_id.clone(),
            info: info_for(r, VERSION, REVISION),
        };
        match client.verify_runner(&req).await {
            Ok(_) => println!(
                "Verifying runner... is valid  runner={} name={:?}",
                r.short_token(),
                r.name
            ),
            Err(oar_gitlab::Error::Forbidden { .. }) => {
                println!(
                    "Verifying runner... is removed  runner={} name={:?}",
                    r.short_token(),
                    r.name
                );
                invalid.push(r.token.expose_secret().to_string());
            }
            Err(e) => bail!("runner {:?}: {}", r.name, crate::manager::error_chain(&e)),
        }
    }
    if a.delete && !invalid.is_empty() {
        let mut doc = ConfigDocument::open(&a.config.config)?;
        let n = doc.remove_runners(|s| invalid.iter().any(|t| t == s.token.expose_secret()));
        doc.save()?;
        println!(
            "Removed {n} invalid runner(s) from {}",
            a.config.config.display()
        );
    } else if !invalid.is_empty() {
        bail!(
            "{} runner(s) are no longer valid (use --delete to remove them)",
            invalid.len()
        );
    }
    Ok(())
}

/// `oar unregister`.
pub async fn unregister(a: UnregisterArgs) -> anyhow::Result<()> {
    let mut doc = ConfigDocument::open(&a.config.config)?;
    let runners = doc.runners();
    let selected: Vec<_> = runners
        .iter()
        .filter(|r| {
            a.all_runners
                || a.name.as_deref() == Some(r.name.as_str())
                || (a.token.as_deref() == Some(r.token.expose_secret())
                    && a.url
                        .as_deref()
                        .is_none_or(|u| u.trim_end_matches('/') == r.url.trim_end_matches('/')))
        })
        .collect();
    if !a.all_runners && a.name.is_none() && a.token.is_none() {
        bail!("say which runner to unregister: --name, --token (with --url) or --all-runners");
    }
    if selected.is_empty() {
        bail!("no configured runner matches; see oar list");
    }
    let mut removed = Vec::new();
    let mut failed = 0;
    // The loaded runners carry the TLS settings (tls-ca-file etc.) to reach GitLab with.
    let loaded = oar_config::load(&a.config.config).ok();
    for r in &selected {
        let configured = loaded.as_ref().and_then(|l| {
            l.config
                .runners
                .iter()
                .find(|c| c.token.expose_secret() == r.token.expose_secret() && c.name == r.name)
        });
        let client = match configured {
            Some(c) => client_for(c, VERSION)?,
            None => Client::new(&ClientConfig {
                url: r.url.clone(),
                version: VERSION.into(),
                ..ClientConfig::default()
            })?,
        };
        let token = Token::new(r.token.expose_secret());
        // A runner created in GitLab (glrt- token) outlives this machine: only this machine's
        // runner manager goes. A runner this machine registered (legacy token) goes whole.
        let (result, what) = if is_created_runner_token(r.token.expose_secret()) {
            let system_id = crate::system_id::load_or_create(&a.config.config)?;
            let result = client.unregister_runner_manager(&token, &system_id).await;
            (result, format!("runner manager {system_id}"))
        } else {
            (client.unregister_runner(&token).await, "runner".to_string())
        };
        match result {
            // 403: the runner is gone already; 404: so is this runner manager.
            Ok(())
            | Err(oar_gitlab::Error::Forbidden { .. })
            | Err(oar_gitlab::Error::Status { status: 404, .. }) => {
                println!(
                    "Unregistering {what} from GitLab succeeded  runner={}",
                    oar_config::short_token(r.token.expose_secret())
                );
                removed.push(r.token.expose_secret().to_string());
            }
            Err(e) => {
                eprintln!(
                    "Unregistering runner {:?} failed: {}",
                    r.name,
                    crate::manager::error_chain(&e)
                );
                failed += 1;
            }
        }
    }
    doc.remove_runners(|s| removed.iter().any(|t| t == s.token.expose_secret()));
    doc.save()?;
    if failed > 0 {
        bail!("{failed} runner(s) could not be unregistered and were kept in the config");
    }
    Ok(())
}

/// A runner authentication token of a runner created in GitLab (UI or API), as opposed to one
/// that legacy registration handed out.
fn is_created_runner_token(token: &str) -> bool {
    token.starts_with("glrt-")
}

/// `oar list`.
pub fn list(config: &Path) -> anyhow::Result<()> {
    let doc = ConfigDocument::open(config)?;
    println!(
        "Listing configured runners  ConfigFile={}",
        config.display()
    );
    for r in doc.runners() {
        println!(
            "{:<20} Executor={} Token={} URL={}",
            r.name,
            r.executor,
            oar_config::short_token(r.token.expose_secret()),
            r.url
        );
    }
    Ok(())
}

fn single_runner(a: &RunSingleArgs) -> anyhow::Result<RunnerConfig> {
    if let Some(path) = &a.config {
        let loaded = oar_config::load(path)?;
        let runner = match &a.runner_name {
            Some(n) => loaded.config.runner(n).cloned(),
            None => loaded.config.runners.first().cloned(),
        };
        return runner.with_context(|| format!("no such runner in {}", path.display()));
    }
    let url = a
        .conn
        .url
        .clone()
        .context("--url (CI_SERVER_URL) is required")?;
    let token = a
        .token
        .clone()
        .context("--token (CI_SERVER_TOKEN) is required")?;
    let mut doc = toml_edit::DocumentMut::new();
    let mut t = toml_edit::Table::new();
    t["name"] = toml_edit::value(a.name.clone());
    t["url"] = toml_edit::value(url);
    t["token"] = toml_edit::value(token);
    t["executor"] = toml_edit::value(a.executor.clone());
    if let Some(b) = &a.builds_dir {
        t["builds_dir"] = toml_edit::value(b.clone());
    }
    if let Some(c) = &a.cache_dir {
        t["cache_dir"] = toml_edit::value(c.clone());
    }
    for (k, v) in [
        ("tls-ca-file", &a.conn.tls_ca_file),
        ("tls-cert-file", &a.conn.tls_cert_file),
        ("tls-key-file", &a.conn.tls_key_file),
    ] {
        if let Some(p) = v {
            t[k] = toml_edit::value(p.display().to_string());
        }
    }
    let mut arr = toml_edit::ArrayOfTables::new();
    arr.push(t);
    doc["runners"] = toml_edit::Item::ArrayOfTables(arr);
    let loaded = oar_config::parse_str(&doc.to_string(), Path::new("<run-single flags>"))?;
    loaded
        .config
        .runners
        .into_iter()
        .next()
        .context("no runner")
}

/// `oar run-single`.
pub async fn run_single(a: RunSingleArgs, metrics: Metrics) -> anyhow::Result<()> {
    let runner = single_runner(&a)?;
    let config_path = a.config.clone().unwrap_or_else(crate::cli::default_config);
    let system_id =
        crate::system_id::load_or_create(&config_path).unwrap_or_else(|_| "r_000000000000".into());
    let env = JobEnv {
        login_shell: true,
        client: client_for(&runner, VERSION)?,
        info: info_for(&runner, VERSION, REVISION),
        system_id: system_id.clone(),
        working_dir: std::env::current_dir().context("no working directory")?,
        metrics,
        reporter: ReporterConfig::default(),
        iam: crate::cache::IamProviders::default(),
        kube: None,
    };
    let shutdown = CancellationToken::new();
    let mut env = env;
    if runner.executor == oar_config::Executor::Kubernetes {
        env.kube = Some(crate::kube_job::connect(&runner, shutdown.clone()).await?);
    }
    let mut signals = crate::signals::Signals::new()?;
    let mut done = 0u64;
    let mut last_update = String::new();
    let mut waiting_since = tokio::time::Instant::now();
    loop {
        if a.max_builds > 0 && done >= a.max_builds {
            return Ok(());
        }
        if a.wait_timeout > 0 && waiting_since.elapsed() >= Duration::from_secs(a.wait_timeout) {
            bail!("no job arrived within {} s", a.wait_timeout);
        }
        let req = JobRequest {
            token: Token::new(runner.token.expose_secret()),
            system_id: system_id.clone(),
            last_update: last_update.clone(),
            info: env.info.clone(),
        };
        let res = tokio::select! {
            r = env.client.request_job(&req) => r,
            s = signals.next() => { tracing::info!(signal = s, "stopping"); return Ok(()); }
        };
        match res {
            Ok(res) => {
                if let Some(v) = res.last_update {
                    last_update = v;
                }
                match res.outcome {
                    JobRequestOutcome::Job(j) => {
                        let run = job::run(&env, &runner, *j, 0, shutdown.clone());
                        tokio::pin!(run);
                        tokio::select! {
                            _ = &mut run => {}
                            s = signals.next() => {
                                tracing::warn!(signal = s, "interrupting the running job");
                                shutdown.cancel();
                                run.await;
                                return Ok(());
                            }
                        }
                        done += 1;
                        waiting_since = tokio::time::Instant::now();
                        continue;
                    }
                    JobRequestOutcome::Malformed {
                        id: Some(id),
                        token: Some(token),
                        reason,
                    } => {
                        job::fail_malformed(&env, id, token, &reason).await;
                        done += 1;
                        continue;
                    }
                    JobRequestOutcome::Malformed { reason, .. } => {
                        tracing::error!(%reason, "GitLab sent a job payload Oar cannot read");
                    }
                    JobRequestOutcome::NoJob => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %crate::manager::error_chain(&e), "job request failed")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(a.check_interval.max(1))) => {}
            s = signals.next() => { tracing::info!(signal = s, "stopping"); return Ok(()); }
        }
    }
}

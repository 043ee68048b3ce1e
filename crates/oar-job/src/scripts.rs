//! Generation of each stage's script from a [`JobContext`]. Pure: values in, text out.

use crate::context::{JobContext, TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE};
use crate::shell::{ScriptWriter, quote};
use crate::stage::{Stage, StageScript};

/// Git strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitStrategy {
    /// Fresh clone (the project directory is removed first).
    Clone,
    /// Reuse the existing checkout.
    Fetch,
    /// No git at all; the directory is kept.
    None,
    /// No git; the directory is emptied.
    Empty,
}

impl JobContext {
    /// `GIT_STRATEGY`, defaulting from `allow_git_fetch`; unknown values fall back with a
    /// warning returned to the caller.
    pub fn git_strategy(&self) -> (GitStrategy, Option<String>) {
        let default = if self.job.allow_git_fetch {
            GitStrategy::Fetch
        } else {
            GitStrategy::Clone
        };
        match self.var("GIT_STRATEGY").as_str() {
            "" => (default, None),
            "clone" => (GitStrategy::Clone, None),
            "fetch" => (GitStrategy::Fetch, None),
            "none" => (GitStrategy::None, None),
            "empty" => (GitStrategy::Empty, None),
            other => (
                default,
                Some(format!("unknown GIT_STRATEGY {other:?}, using the default")),
            ),
        }
    }
}

fn file_path(ctx: &JobContext, key: &str) -> String {
    format!("{}/{key}", ctx.layout.tmp_dir)
}

/// Exports every variable; file variables are written to `<tmp>/<KEY>`. With `env_only`,
/// file variables are exported as paths without rewriting their files (cleanup stage).
fn prologue(w: &mut ScriptWriter, ctx: &JobContext, env_only: bool, job_status: Option<&str>) {
    let tmp = &ctx.layout.tmp_dir;
    if !env_only {
        w.mkdir(tmp);
    }
    for v in ctx.vars.deduped() {
        let value = if v.key == "CI_JOB_STATUS" && job_status.is_some() {
            job_status.unwrap_or_default().to_string()
        } else if v.raw {
            v.value.clone()
        } else {
            ctx.vars.expand(&v.value)
        };
        if v.file {
            let path = file_path(ctx, &v.key);
            if !env_only {
                w.line(format!("printf '%s' {} > {}", quote(&value), quote(&path)));
            }
            w.export(&v.key, &path);
        } else {
            w.export(&v.key, &value);
        }
    }
    let env_file = format!("{tmp}/gitlab_runner_env");
    w.export("GITLAB_ENV", &env_file);
    if !env_only {
        w.touch(&env_file);
        w.line(format!(
            "while IFS= read -r line || [ -n \"$line\" ]; do [ -n \"$line\" ] && export \"$line\"; done < {}",
            quote(&env_file)
        ));
    }
}

/// Runs the runner's configured script (may be several lines) and hooks, echoing each line.
fn user_lines(w: &mut ScriptWriter, lines: &[String]) {
    for l in lines {
        w.user_command(l);
    }
}

fn config_script(s: &Option<String>) -> Vec<String> {
    s.iter().filter(|s| !s.trim().is_empty()).cloned().collect()
}

fn hook(ctx: &JobContext, name: &str) -> Vec<String> {
    ctx.job
        .hooks
        .iter()
        .filter(|h| h.name == name)
        .flat_map(|h| h.script.clone())
        .collect()
}

/// `prepare_script`.
pub fn prepare(ctx: &JobContext) -> StageScript {
    let mut w = ScriptWriter::new();
    // bash knows its host name; other shells ask.
    w.line("printf 'Running on %s...\\n' \"${HOSTNAME:-$(hostname 2>/dev/null || uname -n)}\"");
    w.rm_files(&[format!("{}/gitlab_runner_env", ctx.layout.tmp_dir)]);
    finish(ctx, Stage::Prepare, &w)
}

/// The remote URL without credentials, with `clone_url` applied.
fn clean_remote(ctx: &JobContext) -> (String, Option<url::Url>) {
    let raw = ctx.job.git_info.repo_url.expose();
    match url::Url::parse(raw) {
        Ok(mut u) => {
            let creds = u.clone();
            let _ = u.set_username("");
            let _ = u.set_password(None);
            if let Some(clone_url) = ctx
                .settings
                .clone_url
                .as_deref()
                .and_then(|c| url::Url::parse(c).ok())
            {
                let _ = u.set_scheme(clone_url.scheme());
                let _ = u.set_host(clone_url.host_str());
                let _ = u.set_port(clone_url.port());
            }
            (u.to_string(), Some(creds))
        }
        Err(_) => (raw.to_string(), None),
    }
}

/// `get_sources`.
pub fn get_sources(ctx: &JobContext) -> StageScript {
    let mut w = ScriptWriter::new();
    let (strategy, warning) = ctx.git_strategy();
    prologue(&mut w, ctx, false, None);
    if let Some(warn) = warning {
        w.warning(&format!("WARNING: {warn}"));
    }
    w.export("GIT_TERMINAL_PROMPT", "0");
    w.export("GCM_INTERACTIVE", "Never");
    let dir = ctx.layout.project_dir.clone();
    let tmp = ctx.layout.tmp_dir.clone();
    match strategy {
        GitStrategy::None => {
            w.notice("Skipping Git repository setup");
            w.mkdir(&dir);
        }
        GitStrategy::Empty => {
            w.notice("Skipping Git repository setup and creating an empty build directory");
            w.line(format!("rm -rf {}", quote(&dir)));
            w.mkdir(&dir);
        }
        GitStrategy::Clone | GitStrategy::Fetch => {
            user_lines(&mut w, &config_script(&ctx.settings.pre_get_sources_script));
            user_lines(&mut w, &hook(ctx, "pre_get_sources_script"));
            if ctx.vars.get("GIT_LFS_SKIP_SMUDGE").is_none() {
                w.export("GIT_LFS_SKIP_SMUDGE", "1");
            }
            fetch_sources(&mut w, ctx, strategy, &dir, &tmp);
            checkout(&mut w, ctx);
            submodules(&mut w, ctx);
        }
    }
    if matches!(strategy, GitStrategy::Clone | GitStrategy::Fetch) {
        user_lines(&mut w, &hook(ctx, "post_get_sources_script"));
        user_lines(
            &mut w,
            &config_script(&ctx.settings.post_get_sources_script),
        );
    }
    finish(ctx, Stage::GetSources, &w)
}

fn fetch_sources(
    w: &mut ScriptWriter,
    ctx: &JobContext,
    strategy: GitStrategy,
    dir: &str,
    tmp: &str,
) {
    let depth = ctx.job.git_info.depth;
    let (remote, creds) = clean_remote(ctx);
    if strategy == GitStrategy::Clone {
        w.notice(&if depth > 0 {
            format!("Fetching changes with git depth set to {depth}...")
        } else {
            "Fetching changes...".to_string()
        });
        w.line(format!("rm -rf {}", quote(dir)));
    } else {
        w.notice(&if depth > 0 {
            format!("Fetching changes with git depth set to {depth}...")
        } else {
            "Fetching changes...".to_string()
        });
    }
    // Stale locks left by a killed job.
    let locks: Vec<String> = [
        "index.lock",
        "shallow.lock",
        "HEAD.lock",
        "hooks/post-checkout",
        "config.lock",
    ]
    .iter()
    .map(|lock| format!("{dir}/.git/{lock}"))
    .collect();
    w.rm_files(&locks);
    w.line(format!(
        "if [ -d {q}/.git/refs ]; then find {q}/.git/refs -type f -name '*.lock' -exec rm -f {{}} + ; fi",
        q = quote(dir)
    ));
    // Template and external config: credentials live only in the tmp dir, never in .git/config.
    let template = format!("{tmp}/git-template");
    let ext = format!("{tmp}/.gitlab-runner.ext.conf");
    w.mkdir(&template);
    // The template's config, as `git config -f` would write it, without a git process per key.
    let template_config = format!(
        "[init]\n\tdefaultBranch = none\n[fetch]\n\trecurseSubmodules = false\n\
         [credential]\n\tinteractive = never\n[gc]\n\tautoDetach = false\n\
         [include]\n\tpath = {}\n",
        git_config_value(&ext)
    );
    w.line(format!(
        "printf '%s' {} > {}",
        quote(&template_config),
        quote(&format!("{template}/config"))
    ));
    w.rm_files(std::slice::from_ref(&ext));
    if let Some(creds) = creds.filter(|c| !c.username().is_empty() || c.password().is_some()) {
        let mut host_root = creds.clone();
        host_root.set_path("/");
        host_root.set_query(None);
        let mut clean_root = host_root.clone();
        let _ = clean_root.set_username("");
        let _ = clean_root.set_password(None);
        // With clone_url the remote's host differs from the payload's; map both.
        let (remote_root, _) = {
            let mut r = url::Url::parse(&remote).unwrap_or(clean_root.clone());
            r.set_path("/");
            r.set_query(None);
            (r, ())
        };
        let mut cred_remote_root = remote_root.clone();
        let _ = cred_remote_root.set_username(creds.username());
        let _ = cred_remote_root.set_password(creds.password());
        // The file was just removed: this is what `git config -f --replace-all` writes.
        let ext_config = format!(
            "[url {}]\n\tinsteadOf = {}\n",
            git_config_value(cred_remote_root.as_str()),
            git_config_value(remote_root.as_str())
        );
        w.line(format!(
            "printf '%s' {} > {}",
            quote(&ext_config),
            quote(&ext)
        ));
    }
    git_tls_config(w, ctx, &remote, &ext);
    w.export("GLR_EXT_GIT_CONFIG_PATH", &ext);
    let mut init = vec!["git", "init", dir, "--template", &template];
    let object_format = ctx.job.git_info.repo_object_format.as_str();
    if object_format == "sha256" {
        init.extend(["--object-format", "sha256"]);
    }
    // git's own "Initialized empty/Reinitialized existing Git repository" line is shown, as
    // in GitLab's job logs.
    w.command(init);
    w.cd(dir);
    w.if_(&format!(
        "git remote add origin {} >/dev/null 2>&1",
        quote(&remote)
    ));
    w.notice("Created fresh repository.");
    w.else_();
    w.command(["git", "remote", "set-url", "origin", &remote]);
    w.line("git config --file .git/config --replace-all include.path \"$GLR_EXT_GIT_CONFIG_PATH\"");
    w.fi();
    let ua = format!(
        "http.userAgent=gitlab-runner {} {}/{}",
        ctx.settings.version,
        std::env::consts::OS,
        oar_gitlab::info::go_arch()
    );
    let mut fetch: Vec<String> = vec![
        "git".into(),
        "-c".into(),
        ua,
        "fetch".into(),
        "origin".into(),
        "--no-recurse-submodules".into(),
    ];
    let refspecs = &ctx.job.git_info.refspecs;
    if refspecs.is_empty() {
        fetch.push("+refs/heads/*:refs/remotes/origin/*".into());
        fetch.push("+refs/tags/*:refs/tags/*".into());
    } else {
        fetch.extend(refspecs.iter().cloned());
    }
    if depth > 0 {
        fetch.push("--depth".into());
        fetch.push(depth.to_string());
    }
    let extra = ctx
        .vars
        .get("GIT_FETCH_EXTRA_FLAGS")
        .map(|_| ctx.var("GIT_FETCH_EXTRA_FLAGS"));
    let extra_flags: Vec<String> = match extra {
        Some(flags) => flags.split_whitespace().map(str::to_string).collect(),
        None => vec!["--prune".into(), "--quiet".into()],
    };
    fetch.extend(extra_flags);
    let fetch_line = fetch.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ");
    if depth == 0 {
        w.if_("[ -e .git/shallow ]");
        w.line(format!("{fetch_line} --unshallow"));
        w.else_();
        w.line(&fetch_line);
        w.fi();
    } else {
        w.line(&fetch_line);
    }
}

/// `s` as a double-quoted git config value (or subsection name): `\\` and `"` escaped,
/// newlines as `\n`.
fn git_config_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\0' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `scheme://host[:port]` of the GitLab hosts git talks to: the remote's (after `clone_url`)
/// and `CI_SERVER_URL`'s, without duplicates.
fn gitlab_hosts(ctx: &JobContext, remote: &str) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::new();
    for candidate in [remote.to_string(), ctx.var("CI_SERVER_URL")] {
        let Ok(u) = url::Url::parse(&candidate) else {
            continue;
        };
        if u.host_str().is_none() {
            continue;
        }
        let origin = u.origin().ascii_serialization();
        if !hosts.contains(&origin) {
            hosts.push(origin);
        }
    }
    hosts
}

/// Git trusts the runner's CA for GitLab and presents its client certificate, as GitLab Runner
/// sets it up: `http.<GitLab URL>.sslCAInfo|sslCert|sslKey` pointing at the TLS file
/// variables, in the external config file (never in `.git/config`).
fn git_tls_config(w: &mut ScriptWriter, ctx: &JobContext, remote: &str, ext: &str) {
    let settings = [
        (TLS_CA_FILE, "sslCAInfo"),
        (TLS_CERT_FILE, "sslCert"),
        (TLS_KEY_FILE, "sslKey"),
    ];
    let wanted: Vec<_> = settings
        .iter()
        .filter(|(var, _)| !ctx.var(var).is_empty())
        .collect();
    if wanted.is_empty() {
        return;
    }
    for host in gitlab_hosts(ctx, remote) {
        for (var, setting) in &wanted {
            // The path is the variable's, expanded by the shell as GitLab Runner does.
            w.line(format!(
                "git config -f {} {} \"${var}\"",
                quote(ext),
                quote(&format!("http.{host}.{setting}"))
            ));
        }
    }
}

fn checkout(w: &mut ScriptWriter, ctx: &JobContext) {
    if ctx.vars.bool("GIT_CHECKOUT") == Some(false) {
        w.notice("Skipping Git checkout");
        return;
    }
    let sha = &ctx.job.git_info.sha;
    let short: String = sha.chars().take(8).collect();
    w.notice(&format!(
        "Checking out {short} as detached HEAD (ref is {})...",
        ctx.job.git_info.git_ref
    ));
    w.command([
        "git",
        "-c",
        "submodule.recurse=false",
        "checkout",
        "-f",
        "-q",
        sha,
    ]);
    let clean = ctx
        .vars
        .get("GIT_CLEAN_FLAGS")
        .map(|_| ctx.var("GIT_CLEAN_FLAGS"));
    let clean = clean.unwrap_or_else(|| "-ffdx".into());
    if clean != "none" && !clean.trim().is_empty() {
        let mut args = vec!["git".to_string(), "clean".into()];
        args.extend(clean.split_whitespace().map(str::to_string));
        w.command(args);
    }
    if ctx.vars.bool("GIT_LFS_SKIP_SMUDGE") != Some(true) {
        // `command -v` first: without git-lfs on the PATH, no git process to find that out.
        w.if_("command -v git-lfs >/dev/null 2>&1 && git lfs version >/dev/null 2>&1");
        w.line("git lfs pull");
        w.fi();
    }
}

fn submodules(w: &mut ScriptWriter, ctx: &JobContext) {
    let strategy = ctx.var("GIT_SUBMODULE_STRATEGY");
    let recursive = match strategy.as_str() {
        "" | "none" => return,
        "normal" => false,
        "recursive" => true,
        other => {
            w.warning(&format!(
                "WARNING: unknown GIT_SUBMODULE_STRATEGY {other:?}, skipping submodules"
            ));
            return;
        }
    };
    let rec: Vec<&str> = if recursive {
        vec!["--recursive"]
    } else {
        vec![]
    };
    let paths: Vec<String> = ctx
        .var("GIT_SUBMODULE_PATHS")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let with_paths = |mut base: Vec<String>| {
        if !paths.is_empty() {
            base.push("--".into());
            base.extend(paths.iter().cloned());
        }
        base
    };
    w.notice(&format!(
        "Updating/initializing submodules{}...",
        if recursive { " recursively" } else { "" }
    ));
    w.command(["git", "submodule", "init"]);
    let mut sync: Vec<String> = vec!["git".into(), "submodule".into(), "sync".into()];
    sync.extend(rec.iter().map(|s| s.to_string()));
    w.command(with_paths(sync));
    let mut update: Vec<String> = vec![
        "git".into(),
        "-c".into(),
        "include.path=$GLR_EXT_GIT_CONFIG_PATH".into(),
        "submodule".into(),
        "update".into(),
        "--init".into(),
    ];
    update.extend(rec.iter().map(|s| s.to_string()));
    let depth = ctx
        .vars
        .value("GIT_SUBMODULE_DEPTH")
        .and_then(|d| d.parse::<u32>().ok())
        .unwrap_or(ctx.job.git_info.depth);
    if depth > 0 {
        update.push("--depth".into());
        update.push(depth.to_string());
    }
    update.extend(
        ctx.var("GIT_SUBMODULE_UPDATE_FLAGS")
            .split_whitespace()
            .map(str::to_string),
    );
    // include.path must see the variable, so this one line is written with expansion.
    let line = with_paths(update)
        .iter()
        .map(|a| {
            if a.contains("$GLR_EXT_GIT_CONFIG_PATH") {
                format!("\"{a}\"")
            } else {
                quote(a)
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    w.line(line);
    let foreach = |cmd: &str| {
        let mut f = vec!["git".to_string(), "submodule".into(), "foreach".into()];
        f.extend(rec.iter().map(|s| s.to_string()));
        f.push(cmd.into());
        f
    };
    w.command(foreach("git clean -ffdx"));
    w.command(foreach("git reset --hard"));
}

/// A user step (`step_script`, `step_release`).
pub fn step(ctx: &JobContext, name: &str, lines: &[String]) -> StageScript {
    let mut w = ScriptWriter::new();
    prologue(&mut w, ctx, false, None);
    w.cd(&ctx.layout.project_dir);
    user_lines(&mut w, &config_script(&ctx.settings.pre_build_script));
    user_lines(&mut w, lines);
    user_lines(&mut w, &config_script(&ctx.settings.post_build_script));
    finish(ctx, Stage::Step(name.to_string()), &w)
}

/// `after_script`, with `CI_JOB_STATUS` set to the job's outcome so far.
pub fn after_script(ctx: &JobContext, lines: &[String], job_status: &str) -> StageScript {
    let mut w = ScriptWriter::new();
    prologue(&mut w, ctx, false, Some(job_status));
    w.cd(&ctx.layout.project_dir);
    w.notice("Running after script...");
    user_lines(&mut w, lines);
    finish(ctx, Stage::AfterScript, &w)
}

/// A stage Oar cannot do yet: it says so in the log and succeeds, so the job's outcome is the
/// script's.
pub fn unsupported(ctx: &JobContext, stage: Stage, what: &str) -> StageScript {
    let mut w = ScriptWriter::new();
    w.warning(&format!(
        "WARNING: {what} are not supported by Oar yet; skipping this step."
    ));
    finish(ctx, stage, &w)
}

/// `cleanup_file_variables`: removes file variables and the git credentials file.
pub fn cleanup(ctx: &JobContext) -> StageScript {
    let mut w = ScriptWriter::new();
    prologue(&mut w, ctx, true, None);
    let tmp = &ctx.layout.tmp_dir;
    let mut files = vec![
        format!("{tmp}/gitlab_runner_env"),
        format!("{tmp}/masking.db"),
        format!("{tmp}/.gitlab-runner.ext.conf"),
        format!("{tmp}/.glr.gconf"),
    ];
    for v in ctx.vars.deduped() {
        if v.file {
            files.push(file_path(ctx, &v.key));
        }
    }
    w.rm_files(&files);
    finish(ctx, Stage::CleanupFileVariables, &w)
}

fn finish(ctx: &JobContext, stage: Stage, w: &ScriptWriter) -> StageScript {
    StageScript {
        stage,
        script: w.finish(ctx.debug_trace()),
    }
}

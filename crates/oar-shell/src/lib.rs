//! Oar's shell executor: each job stage runs as a local shell process.
//!
//! Every stage gets its own process group, so a cancel or timeout reaches everything the
//! script started: `SIGTERM` to the group, `SIGKILL` after a grace period. Standard output and
//! standard error share one pipe, so the job log keeps their order. Processes a stage leaves
//! behind in its group are killed when the stage ends.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use oar_job::{JobContext, JobError, StageExit, StageRunner, StageScript, TraceLog};
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// Which shell runs the scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shell {
    /// `bash` (default), as a login shell like GitLab Runner's shell executor (unless
    /// [`ShellRunner::without_login`]).
    #[default]
    Bash,
    /// POSIX `sh`.
    Sh,
}

impl Shell {
    /// From `[[runners]] shell`; empty means bash.
    pub fn from_config(name: &str) -> Result<Self, JobError> {
        match name {
            "" | "bash" => Ok(Shell::Bash),
            "sh" => Ok(Shell::Sh),
            other => Err(JobError::Executor(format!(
                "shell {other:?} is not supported by Oar's shell executor (use bash or sh)"
            ))),
        }
    }

    /// The name GitLab shows.
    pub fn name(self) -> &'static str {
        match self {
            Shell::Bash => "bash",
            Shell::Sh => "sh",
        }
    }
}

/// Runs stages as local processes.
#[derive(Debug, Clone)]
pub struct ShellRunner {
    shell: Shell,
    login: bool,
    term_grace: Duration,
    drain_timeout: Duration,
}

impl ShellRunner {
    /// A runner using `shell`.
    pub fn new(shell: Shell) -> Self {
        ShellRunner {
            shell,
            login: true,
            term_grace: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
        }
    }

    /// Bash without `--login`: the stages inherit the caller's environment and skip the
    /// profile scripts, which on a developer's machine can cost more than the job (`oar exec`).
    pub fn without_login(mut self) -> Self {
        self.login = false;
        self
    }

    /// How long a stage may take to stop after `SIGTERM` before `SIGKILL`.
    pub fn with_term_grace(mut self, grace: Duration) -> Self {
        self.term_grace = grace;
        self
    }

    fn command(&self) -> tokio::process::Command {
        match self.shell {
            Shell::Bash => {
                let mut c = tokio::process::Command::new("bash");
                if self.login {
                    c.arg("--login");
                }
                c.arg("-s");
                c
            }
            Shell::Sh => {
                let mut c = tokio::process::Command::new("sh");
                c.arg("-s");
                c
            }
        }
    }
}

fn io_err(what: &str, e: std::io::Error) -> JobError {
    JobError::Executor(format!("{what}: {e}"))
}

/// The script as the shell's standard input: an unlinked file (in the job's tmp directory when
/// it can, else the system's), not a pipe. From a pipe a shell must read byte by byte, so as
/// not to take input meant for the commands it starts; from a file it reads blocks.
async fn script_file(script: &str, tmp_dir: &str) -> Result<std::fs::File, JobError> {
    let body = script.to_owned();
    let dir = tmp_dir.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::{Seek, Write};
        let mut file = tempfile::tempfile_in(&dir).or_else(|_| tempfile::tempfile())?;
        file.write_all(body.as_bytes())?;
        file.rewind()?;
        Ok::<_, std::io::Error>(file)
    })
    .await
    .map_err(|e| JobError::Executor(format!("cannot write the stage script: {e}")))?
    .map_err(|e| io_err("cannot write the stage script", e))
}

fn signal_group(pgid: i32, sig: Signal) {
    // ESRCH means the group is gone already: nothing to do.
    let _ = killpg(Pid::from_raw(pgid), sig);
}

impl ShellRunner {
    /// Creates the job's directories (builds, tmp, cache): [`StageRunner::prepare`] without
    /// announcing the shell executor, for a runner that runs its own stages through this one
    /// (the Kubernetes helper's local stages).
    pub async fn prepare_dirs(&self, ctx: &JobContext) -> Result<(), JobError> {
        for dir in [
            &ctx.layout.builds_dir,
            &ctx.layout.tmp_dir,
            &ctx.layout.cache_dir,
        ] {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| io_err(&format!("cannot create {dir}"), e))?;
        }
        Ok(())
    }
}

impl StageRunner for ShellRunner {
    async fn prepare(&self, ctx: &JobContext, log: &TraceLog) -> Result<(), JobError> {
        log.write(format!("Using Shell ({}) executor...\n", self.shell.name()).as_bytes());
        self.prepare_dirs(ctx).await
    }

    async fn run(
        &self,
        script: &StageScript,
        ctx: &JobContext,
        log: &TraceLog,
        cancel: CancellationToken,
    ) -> Result<StageExit, JobError> {
        let (reader, writer) = std::io::pipe().map_err(|e| io_err("cannot create a pipe", e))?;
        let writer2 = writer
            .try_clone()
            .map_err(|e| io_err("cannot create a pipe", e))?;
        let stdin = script_file(&script.script, &ctx.layout.tmp_dir).await?;
        let mut cmd = self.command();
        cmd.current_dir(&ctx.layout.builds_dir)
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::from(OwnedFd::from(writer)))
            .stderr(Stdio::from(OwnedFd::from(writer2)))
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| io_err(&format!("cannot start {}", self.shell.name()), e))?;
        // Our copies of the write end must go, or the read end never sees EOF.
        drop(cmd);
        let pgid = child.id().map(|p| p as i32).unwrap_or(0);
        let mut receiver = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader))
            .map_err(|e| io_err("cannot read the stage output", e))?;
        let log_w = log.clone();
        let pump = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match receiver.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => log_w.write(&buf[..n]),
                }
            }
        });

        let mut stopped = false;
        let status = tokio::select! {
            s = child.wait() => s,
            _ = cancel.cancelled() => {
                stopped = true;
                signal_group(pgid, Signal::SIGTERM);
                tokio::select! {
                    s = child.wait() => s,
                    _ = tokio::time::sleep(self.term_grace) => {
                        signal_group(pgid, Signal::SIGKILL);
                        child.wait().await
                    }
                }
            }
        }
        .map_err(|e| io_err("waiting for the stage", e))?;
        // Whatever the stage left running in its group goes with it.
        signal_group(pgid, Signal::SIGKILL);
        let mut pump = pump;
        if tokio::time::timeout(self.drain_timeout, &mut pump)
            .await
            .is_err()
        {
            pump.abort();
            log.write(b"\nWARNING: a process outside the stage still holds its output; not waiting for it\n");
        }
        if stopped {
            return Ok(StageExit::Stopped);
        }
        use std::os::unix::process::ExitStatusExt;
        Ok(StageExit::Code(
            status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        ))
    }

    async fn cleanup(&self, _ctx: &JobContext) {}
}

//! The helper agent's [`StageRunner`]: the runner's own stages (sources, cleanup) run here in
//! the helper container; the user's stages (`step_*`, `after_script`) are handed to the build
//! container's step wrapper through FIFOs in the shared volumes (protocol:
//! [`oar_job::podstep`]).

use nix::sys::stat::Mode;
use oar_job::podstep::{BUILD_CONTAINER, Event, Layout, PROTOCOL_VERSION, Request, StepId};
use oar_job::{JobContext, JobError, StageExit, StageRunner, StageScript, TraceLog};
use oar_shell::ShellRunner;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::pipe;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// How long a canceled step has between `SIGTERM` and `SIGKILL`.
const CANCEL_GRACE: Duration = Duration::from_secs(10);

struct Channel {
    control: pipe::Sender,
    status: Lines<BufReader<pipe::Receiver>>,
    /// Interpreter of the build container's steps, from its `ready` event.
    shell: Option<String>,
}

/// Runs stages in a job pod.
pub(crate) struct PodRunner {
    layout: Layout,
    local: ShellRunner,
    channel: Mutex<Option<Channel>>,
    next_step: AtomicU32,
    /// How long to wait for the build container's wrapper to say `ready` (image pulls).
    ready_timeout: Duration,
}

/// Creates a FIFO at `path` (mode 0666, under a temporary name, then renamed into place).
fn make_fifo(path: &Path) -> Result<(), JobError> {
    if path.exists() {
        return Ok(());
    }
    let tmp = Layout::temporary(path);
    let _ = std::fs::remove_file(&tmp);
    nix::unistd::mkfifo(&tmp, Mode::from_bits_truncate(0o666))
        .map_err(|e| JobError::Executor(format!("cannot create FIFO {}: {e}", tmp.display())))?;
    // mkfifo applies the umask; the build container may run as another user.
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| JobError::Executor(format!("cannot place FIFO {}: {e}", path.display())))
}

/// The wrapper said it exits on a signal: the pod is going away.
fn wrapper_exited(code: i32) -> JobError {
    let signal = match code {
        143 => " on SIGTERM",
        130 => " on SIGINT",
        _ => "",
    };
    JobError::Executor(format!(
        "the build container stopped (its step wrapper exited with code {code}{signal}): the job \
         pod is being deleted, evicted or stopped past its deadline"
    ))
}

fn io_err(what: &str, e: std::io::Error) -> JobError {
    JobError::Executor(format!("{what}: {e}"))
}

impl PodRunner {
    pub(crate) fn new(layout: Layout, local: ShellRunner, ready_timeout: Duration) -> Self {
        PodRunner {
            layout,
            local,
            channel: Mutex::new(None),
            next_step: AtomicU32::new(1),
            ready_timeout,
        }
    }

    /// Creates and opens the control and status FIFOs. Both are opened read-write, which
    /// never blocks and never sees end-of-file, whichever side starts first.
    fn open_channel(&self) -> Result<Channel, JobError> {
        for dir in [&self.layout.scripts_dir, &self.layout.logs_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|e| io_err(&format!("cannot create {}", dir.display()), e))?;
        }
        let (control_path, status_path) = (self.layout.control(), self.layout.status());
        make_fifo(&control_path)?;
        make_fifo(&status_path)?;
        let control = pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(&control_path)
            .map_err(|e| io_err("cannot open the control FIFO", e))?;
        let status = pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&status_path)
            .map_err(|e| io_err("cannot open the status FIFO", e))?;
        Ok(Channel {
            control,
            status: BufReader::new(status).lines(),
            shell: None,
        })
    }

    async fn send(channel: &mut Channel, request: &Request) -> Result<(), JobError> {
        channel
            .control
            .write_all(request.line().as_bytes())
            .await
            .map_err(|e| io_err("cannot write to the build container's wrapper", e))
    }

    async fn next_event(channel: &mut Channel) -> Result<Event, JobError> {
        loop {
            let line = channel
                .status
                .next_line()
                .await
                .map_err(|e| io_err("cannot read from the build container's wrapper", e))?
                .ok_or_else(|| JobError::Executor("the wrapper's status FIFO closed".into()))?;
            match Event::parse(&line) {
                Ok(ev) => return Ok(ev),
                Err(e) => tracing::warn!(line, error = %e, "ignoring a line from the wrapper"),
            }
        }
    }

    /// Waits for the wrapper's `ready` (once per job).
    async fn ensure_ready(&self, channel: &mut Channel) -> Result<String, JobError> {
        if let Some(shell) = &channel.shell {
            return Ok(shell.clone());
        }
        let waited = tokio::time::timeout(self.ready_timeout, async {
            loop {
                match Self::next_event(channel).await? {
                    Event::Ready { version, shell, .. } if version == PROTOCOL_VERSION => {
                        return Ok::<_, JobError>(shell);
                    }
                    // The wrapper comes with the pod spec (the manager), this agent with the
                    // helper image: a pinned helper_image of another Oar release may not
                    // understand it.
                    Event::Ready { version, .. } => {
                        return Err(JobError::Executor(format!(
                            "the build container's step wrapper speaks protocol {version}, \
                             this helper speaks {PROTOCOL_VERSION}: the helper image and the \
                             runner are different Oar releases (check helper_image)"
                        )));
                    }
                    Event::Exited { code } => return Err(wrapper_exited(code)),
                    _ => {}
                }
            }
        })
        .await
        .map_err(|_| {
            JobError::Executor(format!(
                "the build container did not start within {}s",
                self.ready_timeout.as_secs()
            ))
        })??;
        channel.shell = Some(waited.clone());
        Ok(waited)
    }

    async fn run_in_build(
        &self,
        script: &StageScript,
        log: &TraceLog,
        cancel: CancellationToken,
    ) -> Result<StageExit, JobError> {
        let mut guard = self.channel.lock().await;
        if guard.is_none() {
            *guard = Some(self.open_channel()?);
        }
        let Some(channel) = guard.as_mut() else {
            return Err(JobError::Executor(
                "no channel to the build container".into(),
            ));
        };
        let shell = self.ensure_ready(channel).await?;
        let n = self.next_step.fetch_add(1, Ordering::Relaxed);
        let id =
            StepId::new(&format!("step-{n}")).map_err(|e| JobError::Executor(e.to_string()))?;
        // The step script, complete before `run` is sent (write, then rename).
        let path = self.layout.script(&id);
        let tmp = Layout::temporary(&path);
        let body = format!("#!{shell}\n{}", script.script);
        tokio::fs::write(&tmp, body)
            .await
            .map_err(|e| io_err("cannot write the step script", e))?;
        tokio::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .await
            .map_err(|e| io_err("cannot set the step script's mode", e))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| io_err("cannot place the step script", e))?;
        let out_path = self.layout.output(&id);
        make_fifo(&out_path)?;
        let mut output = pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&out_path)
            .map_err(|e| io_err("cannot open the step's output FIFO", e))?;
        Self::send(channel, &Request::Run(id.clone())).await?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut canceled = false;
        let (code, oom) = loop {
            tokio::select! {
                n = output.read(&mut buf) => match n {
                    Ok(0) => {}
                    Ok(n) => log.write(&buf[..n]),
                    Err(e) => return Err(io_err("cannot read the step's output", e)),
                },
                ev = Self::next_event(channel) => match ev? {
                    Event::Done { id: done, code, oom } if done == id => break (code, oom),
                    Event::Exited { code } => return Err(wrapper_exited(code)),
                    Event::Error { id: bad, reason } if bad == id.as_str() => {
                        return Err(JobError::Executor(format!(
                            "the build container refused step {id}: {reason}"
                        )));
                    }
                    _ => {}
                },
                _ = cancel.cancelled(), if !canceled => {
                    canceled = true;
                    Self::send(channel, &Request::Cancel { id: id.clone(), grace: CANCEL_GRACE }).await?;
                }
            }
        };
        // Everything the step wrote is in the FIFO before `done`: drain without blocking.
        loop {
            match output.try_read(&mut buf) {
                Ok(0) => break,
                Ok(n) => log.write(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(io_err("cannot read the step's output", e)),
            }
        }
        drop(output);
        let _ = tokio::fs::remove_file(&out_path).await;
        let _ = tokio::fs::remove_file(&path).await;
        if let Some(oom) = oom {
            // Exit code 137 alone would read as a script failure.
            return Err(JobError::Executor(oom.message(BUILD_CONTAINER)));
        }
        if canceled {
            return Ok(StageExit::Stopped);
        }
        Ok(StageExit::Code(code))
    }

    /// Tells the wrapper to end (the build container exits 0).
    pub(crate) async fn finish(&self) {
        let mut guard = self.channel.lock().await;
        if guard.is_none() {
            match self.open_channel() {
                Ok(c) => *guard = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot tell the build container to stop");
                    return;
                }
            }
        }
        if let Some(channel) = guard.as_mut()
            && let Err(e) = Self::send(channel, &Request::Exit).await
        {
            tracing::warn!(error = %e, "cannot tell the build container to stop");
        }
    }
}

impl StageRunner for PodRunner {
    async fn prepare(&self, ctx: &JobContext, log: &TraceLog) -> Result<(), JobError> {
        log.write(b"Using the Kubernetes executor: this job runs in its own pod.\n");
        let mut guard = self.channel.lock().await;
        if guard.is_none() {
            *guard = Some(self.open_channel()?);
        }
        drop(guard);
        // The helper's own stages run through a shell runner; the job's executor is this one.
        self.local.prepare_dirs(ctx).await
    }

    async fn run(
        &self,
        script: &StageScript,
        ctx: &JobContext,
        log: &TraceLog,
        cancel: CancellationToken,
    ) -> Result<StageExit, JobError> {
        if script.stage.is_predefined() {
            self.local.run(script, ctx, log, cancel).await
        } else {
            self.run_in_build(script, log, cancel).await
        }
    }

    async fn cleanup(&self, ctx: &JobContext) {
        self.local.cleanup(ctx).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(dir: &Path) -> PodRunner {
        let layout = Layout::new(dir.join("scripts"), dir.join("logs"));
        PodRunner::new(
            layout,
            ShellRunner::new(oar_shell::Shell::Sh),
            Duration::from_secs(30),
        )
    }

    /// Plays the wrapper's side: writes `line` to the status FIFO once the agent made it.
    async fn wrapper_says(runner: &PodRunner, line: &str) -> Channel {
        let channel = runner.open_channel().unwrap();
        let mut status = pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(runner.layout.status())
            .unwrap();
        status.write_all(line.as_bytes()).await.unwrap();
        // The agent's channel keeps the FIFO open: the line waits in the pipe.
        channel
    }

    #[tokio::test]
    async fn the_wrappers_ready_gives_the_steps_shell() {
        let dir = tempfile::tempdir().unwrap();
        let r = runner(dir.path());
        let line = format!("ready {PROTOCOL_VERSION} /bin/bash setsid\n");
        let mut channel = wrapper_says(&r, &line).await;
        assert_eq!(r.ensure_ready(&mut channel).await.unwrap(), "/bin/bash");
    }

    #[tokio::test]
    async fn a_wrapper_of_another_oar_release_is_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let r = runner(dir.path());
        let line = format!("ready {} /bin/sh setsid\n", PROTOCOL_VERSION + 1);
        let mut channel = wrapper_says(&r, &line).await;
        let err = r.ensure_ready(&mut channel).await.unwrap_err().to_string();
        assert!(
            err.contains("protocol") && err.contains("helper_image"),
            "{err}"
        );
    }
}

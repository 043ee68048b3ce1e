//! The step wrapper for real, without a cluster: this test plays the helper agent's part over
//! the FIFOs of `oar_kube::wrapper` and runs the wrapper under dash, busybox sh and bash, in both
//! process-group modes (`setsid`, and the `/proc` fallback).
//!
//! Every wait is on an event (a FIFO line, bytes, end-of-file, process exit) with a timeout;
//! there is no sleep used as synchronisation.

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use oar_kube::wrapper::{self, Event, GroupMode, Layout, Request, StepId};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::time::{Instant, timeout};

/// Generous bound for anything that should be immediate.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

fn mkfifo(path: &Path) {
    // Created under a temporary name with mode 0666, then renamed, as the agent does.
    let tmp = Layout::temporary(path);
    let status = std::process::Command::new("mkfifo")
        .arg("-m")
        .arg("0666")
        .arg(&tmp)
        .status()
        .expect("mkfifo runs");
    assert!(status.success(), "mkfifo {tmp:?}");
    std::fs::rename(&tmp, path).expect("rename fifo");
}

struct Agent {
    _dir: tempfile::TempDir,
    layout: Layout,
    child: Child,
    control: pipe::Sender,
    status: Lines<BufReader<pipe::Receiver>>,
    label: String,
}

struct Step {
    id: StepId,
    out: pipe::Receiver,
    buf: Vec<u8>,
    sent: Instant,
    first_byte: Option<Duration>,
}

impl Agent {
    /// Starts the wrapper under `shell` (argv), with `step_shell` as the step interpreter.
    async fn start(shell: &[&str], step_shell: &Path, mode: GroupMode) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(dir.path().join("scripts"), dir.path().join("logs"));
        std::fs::create_dir(&layout.scripts_dir).unwrap();
        std::fs::create_dir(&layout.logs_dir).unwrap();

        // The wrapper starts before the FIFOs exist, as it may in a pod. Its stderr goes to a
        // file (shown if the test fails): processes a failed test leaves behind must not hold
        // the test's own output open.
        let stderr = std::fs::File::create(dir.path().join("wrapper.stderr")).unwrap();
        let mut cmd = Command::new(shell[0]);
        cmd.args(&shell[1..])
            .arg("-c")
            .arg(wrapper::WRAPPER)
            .env(wrapper::ENV_SCRIPTS_DIR, &layout.scripts_dir)
            .env(wrapper::ENV_LOGS_DIR, &layout.logs_dir)
            .env(wrapper::ENV_STEP_SHELL, step_shell)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            // Its own process group, as PID 1 of a container is: the `pgrp` mode signals
            // that group and must not reach the test runner.
            .process_group(0)
            .kill_on_drop(true);
        if mode == GroupMode::Pgrp {
            cmd.env(wrapper::ENV_NO_SETSID, "1");
        } else {
            cmd.env_remove(wrapper::ENV_NO_SETSID);
        }
        let child = cmd.spawn().expect("spawn wrapper");

        mkfifo(&layout.status());
        mkfifo(&layout.control());
        let control = pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(layout.control())
            .expect("open control");
        let status = pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(layout.status())
            .expect("open status");
        let mut agent = Agent {
            _dir: dir,
            layout,
            child,
            control,
            status: BufReader::new(status).lines(),
            label: format!("{} ({mode:?})", shell.join(" ")),
        };
        match agent.event().await {
            Event::Ready {
                version,
                shell,
                mode: got,
            } => {
                assert_eq!(version, wrapper::PROTOCOL_VERSION);
                assert_eq!(Path::new(&shell), step_shell);
                assert_eq!(got, mode);
            }
            other => panic!("{}: expected ready, got {other:?}", agent.label),
        }
        agent
    }

    async fn event(&mut self) -> Event {
        let line = timeout(EVENT_TIMEOUT, self.status.next_line())
            .await
            .unwrap_or_else(|_| panic!("{}: no wrapper event in time", self.label))
            .expect("read status")
            .expect("status never ends");
        Event::parse(&line).expect("well-formed event")
    }

    async fn send(&mut self, request: Request) {
        self.control
            .write_all(request.line().as_bytes())
            .await
            .expect("write control");
    }

    /// Writes the script, creates the output FIFO, opens it and sends `run`.
    async fn run(&mut self, id: &str, script: &str) -> Step {
        let id = StepId::new(id).unwrap();
        let path = self.layout.script(&id);
        let tmp = Layout::temporary(&path);
        std::fs::write(&tmp, script).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let out_path = self.layout.output(&id);
        mkfifo(&out_path);
        let out = pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&out_path)
            .expect("open output");
        let sent = Instant::now();
        self.send(Request::Run(id.clone())).await;
        Step {
            id,
            out,
            buf: Vec::new(),
            sent,
            first_byte: None,
        }
    }

    /// Reads output until `needle` shows (status events must not arrive meanwhile).
    async fn read_until(&mut self, step: &mut Step, needle: &str) {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while !String::from_utf8_lossy(&step.buf).contains(needle) {
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, step.out.read(&mut chunk)).await {
                Ok(Ok(n)) => step.push(&chunk[..n]),
                Ok(Err(e)) => panic!("{}: read output: {e}", self.label),
                Err(_) => panic!(
                    "{}: {needle:?} not in output {:?}",
                    self.label,
                    String::from_utf8_lossy(&step.buf)
                ),
            }
        }
    }

    /// Collects output until `done`, then drains the FIFO; returns the exit code.
    async fn wait_done(&mut self, step: &mut Step) -> i32 {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let mut chunk = [0u8; 65536];
            tokio::select! {
                read = step.out.read(&mut chunk) => {
                    let n = read.expect("read output");
                    step.push(&chunk[..n]);
                }
                line = self.status.next_line() => {
                    let line = line.expect("read status").expect("status never ends");
                    match Event::parse(&line).expect("well-formed event") {
                        Event::Done { id, code, .. } if id == step.id => {
                            step.drain();
                            return code;
                        }
                        other => panic!("{}: unexpected event {other:?}", self.label),
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    panic!("{}: step {} did not end", self.label, step.id)
                }
            }
        }
    }

    async fn exit(mut self) {
        self.send(Request::Exit).await;
        let status = timeout(EVENT_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{}: wrapper did not exit", self.label))
            .expect("wait wrapper");
        assert_eq!(
            status.code(),
            Some(0),
            "{}: wrapper exit status",
            self.label
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let stderr = std::fs::read_to_string(self._dir.path().join("wrapper.stderr"));
            eprintln!("{}: wrapper stderr: {stderr:?}", self.label);
        }
    }
}

impl Step {
    fn push(&mut self, bytes: &[u8]) {
        if self.first_byte.is_none() && !bytes.is_empty() {
            self.first_byte = Some(self.sent.elapsed());
        }
        self.buf.extend_from_slice(bytes);
    }

    fn drain(&mut self) {
        let mut chunk = [0u8; 65536];
        loop {
            match self.out.try_read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => self.push(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => panic!("drain output: {e}"),
            }
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

/// A FIFO whose only writer is a background process of a step: end-of-file on it means that
/// process is gone.
struct Witness {
    path: PathBuf,
}

impl Witness {
    fn new(agent: &Agent, name: &str) -> Witness {
        let path = agent.layout.scripts_dir.join(name);
        mkfifo(&path);
        Witness { path }
    }

    /// Script lines that start `sleep 60` in the background holding the witness open.
    fn spawn_line(&self) -> String {
        format!(
            "exec 5>'{}'; sleep 60 >&5 & exec 5>&-\n",
            self.path.display()
        )
    }

    /// Opens the reading end, before the step runs (the step's open for writing waits for a
    /// reader). Read it only once the writer holds it: until then a read shows end-of-file.
    fn open(&self) -> pipe::Receiver {
        pipe::OpenOptions::new()
            .open_receiver(&self.path)
            .expect("open witness")
    }

    async fn wait_gone(receiver: &mut pipe::Receiver, label: &str) {
        let mut sink = Vec::new();
        timeout(EVENT_TIMEOUT, receiver.read_to_end(&mut sink))
            .await
            .unwrap_or_else(|_| panic!("{label}: the step's background process survived"))
            .expect("read witness");
    }
}

/// The wrapper shells under test: (argv of the wrapper's shell, the step interpreter).
fn shells(tmp: &Path) -> Vec<(Vec<String>, PathBuf)> {
    let mut out = Vec::new();
    if let Some(dash) = which("dash") {
        out.push((vec![dash.display().to_string()], dash));
    } else {
        eprintln!("dash not installed: skipped (apt-get install dash)");
    }
    if let Some(busybox) = which("busybox") {
        // The step interpreter must be a path: a symlink named sh makes busybox run its shell.
        let sh = tmp.join("sh");
        std::os::unix::fs::symlink(&busybox, &sh).unwrap();
        out.push((vec![busybox.display().to_string(), "sh".to_owned()], sh));
    } else {
        eprintln!("busybox not installed: skipped (apt-get install busybox-static)");
    }
    let bash = which("bash").expect("bash is installed");
    out.push((vec![bash.display().to_string()], bash));
    out
}

async fn scenario(shell: &[String], step_shell: &Path, mode: GroupMode) {
    let argv: Vec<&str> = shell.iter().map(String::as_str).collect();
    let mut agent = Agent::start(&argv, step_shell, mode).await;
    let label = agent.label.clone();

    // Two steps in a row, exit codes 0 and 3; stdout and stderr interleaved in order.
    let mut s1 = agent
        .run(
            "s1",
            "echo out-1\necho err-1 >&2\necho out-2\necho err-2 >&2\nprintf 'no newline'\n",
        )
        .await;
    assert_eq!(agent.wait_done(&mut s1).await, 0, "{label}");
    assert_eq!(
        s1.text(),
        "out-1\nerr-1\nout-2\nerr-2\nno newline",
        "{label}"
    );
    let latency = s1.first_byte.expect("first byte seen");
    println!("{label}: first output byte {latency:?} after `run`");
    assert!(
        latency < Duration::from_secs(2),
        "{label}: latency {latency:?}"
    );

    let mut s2 = agent
        .run("s2", "echo before >&2\nfalse\nexit 3\necho never\n")
        .await;
    assert_eq!(agent.wait_done(&mut s2).await, 3, "{label}");
    assert_eq!(s2.text(), "before\n", "{label}");

    // Much output: nothing is lost between the FIFO and `done`.
    let mut s3 = agent
        .run(
            "s3",
            "i=0\nwhile [ $i -lt 20000 ]; do echo \"line $i\"; i=$((i+1)); done\n",
        )
        .await;
    assert_eq!(agent.wait_done(&mut s3).await, 0, "{label}");
    let lines: Vec<String> = s3.text().lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 20000, "{label}");
    assert_eq!(lines[19999], "line 19999", "{label}");

    // A second `run` while one runs is refused; cancel of a plain step (sleep): SIGTERM to the
    // whole group ends it and its background process.
    let witness = Witness::new(&agent, "w4");
    let mut held = witness.open();
    let mut s4 = agent
        .run(
            "s4",
            &format!(
                "{}echo started\nsleep 60\necho never\n",
                witness.spawn_line()
            ),
        )
        .await;
    agent.read_until(&mut s4, "started\n").await;
    agent.send(Request::Run(StepId::new("s5").unwrap())).await;
    assert_eq!(
        agent.event().await,
        Event::Error {
            id: "s5".into(),
            reason: "busy".into()
        },
        "{label}"
    );
    let cancelled = Instant::now();
    agent
        .send(Request::Cancel {
            id: s4.id.clone(),
            grace: Duration::from_secs(30),
        })
        .await;
    assert_eq!(agent.wait_done(&mut s4).await, 143, "{label}");
    assert!(
        cancelled.elapsed() < Duration::from_secs(5),
        "{label}: SIGTERM did not end the step at once"
    );
    Witness::wait_gone(&mut held, &label).await;
    assert!(!s4.text().contains("never"), "{label}");

    // A step that traps SIGTERM survives it and is killed after the grace period. (Short
    // sleeps: a shell runs its trap only after its foreground command, and a child caught
    // between fork and exec can miss the group's SIGTERM.)
    let witness = Witness::new(&agent, "w6");
    let mut held = witness.open();
    let mut s6 = agent
        .run(
            "s6",
            &format!(
                "trap 'echo got-term' TERM\n{}echo started\nwhile :; do sleep 0.1; done\n",
                witness.spawn_line()
            ),
        )
        .await;
    agent.read_until(&mut s6, "started\n").await;
    let cancelled = Instant::now();
    agent
        .send(Request::Cancel {
            id: s6.id.clone(),
            grace: Duration::from_secs(2),
        })
        .await;
    assert_eq!(agent.wait_done(&mut s6).await, 137, "{label}");
    let took = cancelled.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(8),
        "{label}: KILL after {took:?}, grace was 2 s"
    );
    assert!(s6.text().contains("got-term"), "{label}: {:?}", s6.text());
    Witness::wait_gone(&mut held, &label).await;

    // A cancel for a step that is not running is ignored, and the wrapper still works.
    agent
        .send(Request::Cancel {
            id: s6.id.clone(),
            grace: Duration::from_secs(1),
        })
        .await;
    let mut s7 = agent.run("s7", "echo still-here\n").await;
    assert_eq!(agent.wait_done(&mut s7).await, 0, "{label}");
    assert_eq!(s7.text(), "still-here\n", "{label}");

    agent.exit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrapper_protocol_with_setsid() {
    if which("setsid").is_none() {
        eprintln!("setsid not installed: skipped");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for (shell, step_shell) in shells(tmp.path()) {
        scenario(&shell, &step_shell, GroupMode::Setsid).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrapper_protocol_without_setsid() {
    let tmp = tempfile::tempdir().unwrap();
    for (shell, step_shell) in shells(tmp.path()) {
        scenario(&shell, &step_shell, GroupMode::Pgrp).await;
    }
}

#[tokio::test]
async fn wrapper_ends_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let bash = which("bash").unwrap();
    let shell = which("dash").unwrap_or_else(|| bash.clone());
    let mode = if which("setsid").is_some() {
        GroupMode::Setsid
    } else {
        GroupMode::Pgrp
    };
    let mut agent = Agent::start(&[&shell.display().to_string()], &bash, mode).await;
    let pid = agent.child.id().expect("running") as i32;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // The agent learns that the build container is going away.
    assert_eq!(agent.event().await, Event::Exited { code: 143 });
    let status = timeout(EVENT_TIMEOUT, agent.child.wait())
        .await
        .expect("wrapper exits on SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(143));
    drop(tmp);
}

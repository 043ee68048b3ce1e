//! The protocol between the helper agent and the build container's step wrapper (the
//! wrapper script itself lives with the pod builder, `oar_kube::wrapper`). Pure: names, paths
//! and message lines; the agent in `oar-helper` does the IO.
//!
//! The build container runs the user's image with its command replaced by [`command()`]:
//! `/bin/sh -c` [`WRAPPER`], a POSIX `sh` script that works under dash, busybox ash and bash.
//! The helper agent (`oar-helper agent`, in the helper container) hands it one step at a time
//! through FIFOs in the shared `scripts` and `logs` emptyDir volumes. Nothing goes through the
//! Kubernetes API.
//!
//! # Files
//!
//! The directories come from the build container's environment: [`ENV_SCRIPTS_DIR`] (default
//! `/oar/scripts`) and [`ENV_LOGS_DIR`] (default `/oar/logs`); [`Layout`] computes the paths.
//!
//! | path | kind | created by | direction |
//! |---|---|---|---|
//! | `<scripts>/control` | FIFO | agent, before or after the wrapper starts | agent → wrapper: requests |
//! | `<scripts>/status` | FIFO | agent, likewise | wrapper → agent: events |
//! | `<scripts>/<id>.sh` | regular file | agent, before `run <id>` | the step script |
//! | `<logs>/<id>.out` | FIFO | agent, before `run <id>` | step stdout + stderr → agent |
//!
//! - The agent creates every FIFO with mode `0666` under a temporary name and renames it into
//!   place, so the wrapper (which may run as another user) never sees a half-made file.
//!   The step script must be complete before `run` is sent (write, then rename).
//! - Both sides open `control` and `status` **read-write** (Linux): such an open never blocks,
//!   and a reader never sees end-of-file when the other side closes, so either side may start
//!   first and requests written before the wrapper starts simply wait in the pipe.
//! - The agent opens `<id>.out` for reading (read-write, so that no end-of-file shows before the
//!   step opens it) **before** sending `run <id>`; the step's stdout and stderr are both that
//!   FIFO, so their interleaving is kept exactly. The first byte the step writes is readable by
//!   the agent at once: no polling anywhere on the data path.
//!
//! # Messages
//!
//! One line per message, fields separated by single spaces; each line is written with one
//! `write` of less than `PIPE_BUF` bytes, so lines from several writers never mix.
//!
//! Requests (agent → wrapper, `control`), built by [`Request::line`]:
//! - `run <id>`: run `<shell> <scripts>/<id>.sh` with stdin `/dev/null` and stdout + stderr to
//!   `<logs>/<id>.out`. One step at a time: a `run` while a step runs is answered
//!   `error <id> busy`; an `<id>` that is not a [`StepId`] gets `error <id> bad-id`; a missing
//!   output FIFO gets `error <id> no-output-fifo`. An `error` answer has no `done`.
//! - `cancel <id> <grace-seconds>`: send `SIGTERM` to the step's whole process group, then
//!   `SIGKILL` to it after the grace period if it still runs. Ignored unless `<id>` is the
//!   running step (so a cancel racing with the step's end is harmless); a second cancel of the
//!   same step is ignored. The step still ends with `done`.
//! - `exit`: the wrapper exits with code 0 (and with it the container). A running step is left
//!   to the container runtime; the agent sends `exit` when no step runs.
//!
//! Events (wrapper → agent, `status`), read by [`Event::parse`]:
//! - `ready <protocol> <shell> <mode>`: sent once when the wrapper has opened both FIFOs.
//!   `<shell>` is the interpreter of every step: `$OAR_STEP_SHELL` if set, else the path of
//!   `bash` if the image has one, else of `sh` (GitLab Runner's preference); the agent generates
//!   step scripts for it. `<mode>` is [`GroupMode`].
//! - `done <id> <code>`: the step's exit status as the shell reports it (`128 + n` when killed
//!   by signal `n`: 143 after `SIGTERM`, 137 after `SIGKILL`). Every byte the step itself wrote
//!   is in the output FIFO before `done` is written, so on `done` the agent drains the FIFO
//!   without blocking and stops reading; output of background processes the step left behind
//!   after that is not collected.
//! - `done <id> <code> oom <limit>`: the same, when the kernel's OOM killer killed a process of
//!   the build container while the step ran (the container cgroup's `oom_kill` counter rose:
//!   `memory.events` on cgroup v2, `memory.oom_control` on v1). `<limit>` is the container's
//!   memory limit in bytes (`memory.max`, `memory.limit_in_bytes`), `-` when it has none or it
//!   can't be read. The wrapper itself usually survives (the OOM killer picks the biggest
//!   process, the step's); when it does not, the container ends `OOMKilled` and no event comes.
//! - `error <id> <reason>`: a refused `run` (see above).
//! - `exit <code>`: the wrapper is exiting on a signal (`SIGTERM`: 143, `SIGINT`: 130): the pod
//!   is being deleted or evicted. The running step dies with it (the container's PID 1 is
//!   gone) and gets no `done`.
//!
//! Fields after those listed are ignored, so a newer wrapper may say more.
//!
//! The wrapper also writes two internal lines into `control` for itself (`pgid <id> <pid>` and
//! `fin <id>`); the agent never sends them and never sees them.
//!
//! # Process groups
//!
//! `set -m` does not help: dash and busybox ash turn job control off when there is no terminal
//! (a pod has none), so background jobs stay in the shell's process group. The wrapper instead
//! runs each step under `setsid` when the image has it (util-linux on Debian, Ubuntu, Fedora;
//! a busybox applet on Alpine): the step is then a session and process group of its own, and
//! cancel signals exactly that group (mode `setsid`). Without `setsid` (mode `pgrp`) the step
//! shares the wrapper's process group, and cancel signals every process of that group found in
//! `/proc` except the wrapper's own; processes left behind by earlier steps of the job are then
//! signalled too. In both modes a process that makes itself a new session or group escapes,
//! as it would under GitLab Runner.
//!
//! The wrapper traps `SIGTERM` and `SIGINT`, says `exit <code>` and exits (143, 130), so deleting
//! the pod does not wait for the termination grace period and the agent learns at once that
//! the build container is gone.
//!
//! # Exit codes of the wrapper
//!
//! 0 after `exit`; 143 / 130 on `SIGTERM` / `SIGINT`; 2 when a FIFO cannot be opened; 1 if
//! reading `control` ever fails.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The protocol version the wrapper announces in `ready`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The name of the pod's container that runs the wrapper and the user's steps.
pub const BUILD_CONTAINER: &str = "build";

/// Name of the request FIFO in the scripts directory.
pub const CONTROL_FIFO: &str = "control";
/// Name of the event FIFO in the scripts directory.
pub const STATUS_FIFO: &str = "status";

/// Environment variable naming the scripts directory (default [`DEFAULT_SCRIPTS_DIR`]).
pub const ENV_SCRIPTS_DIR: &str = "OAR_SCRIPTS_DIR";
/// Environment variable naming the logs directory (default [`DEFAULT_LOGS_DIR`]).
pub const ENV_LOGS_DIR: &str = "OAR_LOGS_DIR";
/// Environment variable forcing the step interpreter (a path; default: bash if present, else sh).
pub const ENV_STEP_SHELL: &str = "OAR_STEP_SHELL";
/// Environment variable that, when non-empty, makes the wrapper ignore `setsid` (mode `pgrp`).
/// Meant for tests.
pub const ENV_NO_SETSID: &str = "OAR_WRAPPER_NO_SETSID";

/// The scripts directory when [`ENV_SCRIPTS_DIR`] is unset.
pub const DEFAULT_SCRIPTS_DIR: &str = "/oar/scripts";
/// The logs directory when [`ENV_LOGS_DIR`] is unset.
pub const DEFAULT_LOGS_DIR: &str = "/oar/logs";

/// How the wrapper isolates steps (the last field of `ready`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupMode {
    /// Each step runs under `setsid`: cancel signals exactly the step's process group.
    Setsid,
    /// No `setsid` in the image: cancel signals the wrapper's process group, found in `/proc`.
    Pgrp,
}

/// A step identifier: 1 to 64 characters of `[A-Za-z0-9_.-]`, starting with a letter or digit
/// (so it is a safe file name, never `.` or `..`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepId(String);

impl StepId {
    /// Checks `id`.
    pub fn new(id: &str) -> Result<Self, ProtocolError> {
        let valid = !id.is_empty()
            && id.len() <= 64
            && id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if valid {
            Ok(Self(id.to_owned()))
        } else {
            Err(ProtocolError::BadStepId(id.to_owned()))
        }
    }

    /// The identifier.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The protocol's files, as seen from one container (the agent's and the wrapper's mount
/// paths are the same in an Oar pod).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The scripts directory (`OAR_SCRIPTS_DIR`).
    pub scripts_dir: PathBuf,
    /// The logs directory (`OAR_LOGS_DIR`).
    pub logs_dir: PathBuf,
}

impl Default for Layout {
    fn default() -> Self {
        Self::new(DEFAULT_SCRIPTS_DIR, DEFAULT_LOGS_DIR)
    }
}

impl Layout {
    /// A layout with these directories.
    pub fn new(scripts_dir: impl Into<PathBuf>, logs_dir: impl Into<PathBuf>) -> Self {
        Self {
            scripts_dir: scripts_dir.into(),
            logs_dir: logs_dir.into(),
        }
    }

    /// `<scripts>/control`.
    pub fn control(&self) -> PathBuf {
        self.scripts_dir.join(CONTROL_FIFO)
    }

    /// `<scripts>/status`.
    pub fn status(&self) -> PathBuf {
        self.scripts_dir.join(STATUS_FIFO)
    }

    /// `<scripts>/<id>.sh`.
    pub fn script(&self, id: &StepId) -> PathBuf {
        self.scripts_dir.join(format!("{id}.sh"))
    }

    /// `<logs>/<id>.out`.
    pub fn output(&self, id: &StepId) -> PathBuf {
        self.logs_dir.join(format!("{id}.out"))
    }

    /// A temporary name next to `path` to create a file under before renaming it into place.
    pub fn temporary(path: &Path) -> PathBuf {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        path.with_file_name(name)
    }
}

/// A request from the agent to the wrapper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Run the step.
    Run(StepId),
    /// Cancel the running step: `SIGTERM` to its process group, `SIGKILL` after `grace`.
    Cancel {
        /// The step.
        id: StepId,
        /// Time between `SIGTERM` and `SIGKILL`, rounded up to whole seconds.
        grace: Duration,
    },
    /// End the wrapper (exit code 0).
    Exit,
}

impl Request {
    /// The request as one line, newline included, ready to be written with one `write`.
    pub fn line(&self) -> String {
        match self {
            Request::Run(id) => format!("run {id}\n"),
            Request::Cancel { id, grace } => {
                let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
                format!("cancel {id} {secs}\n")
            }
            Request::Exit => "exit\n".to_owned(),
        }
    }
}

/// An event from the wrapper to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The wrapper has opened its FIFOs.
    Ready {
        /// Protocol version ([`PROTOCOL_VERSION`]).
        version: u32,
        /// Interpreter of the steps (a path).
        shell: String,
        /// How steps are isolated.
        mode: GroupMode,
    },
    /// A step ended.
    Done {
        /// The step.
        id: StepId,
        /// Its exit status; `128 + n` when killed by signal `n`.
        code: i32,
        /// The kernel's OOM killer killed a process of the build container meanwhile.
        oom: Option<OomKill>,
    },
    /// The wrapper is exiting on a signal: the pod is going away.
    Exited {
        /// Its exit code (143 for `SIGTERM`, 130 for `SIGINT`).
        code: i32,
    },
    /// A `run` was refused.
    Error {
        /// The identifier as sent (it may be invalid).
        id: String,
        /// `busy`, `bad-id` or `no-output-fifo`.
        reason: String,
    },
}

impl Event {
    /// Parses one line (with or without its newline).
    pub fn parse(line: &str) -> Result<Self, ProtocolError> {
        let bad = || ProtocolError::BadEvent(line.to_owned());
        let line = line.strip_suffix('\n').unwrap_or(line);
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.as_slice() {
            ["ready", version, shell, mode] => Ok(Event::Ready {
                version: version.parse().map_err(|_| bad())?,
                shell: (*shell).to_owned(),
                mode: match *mode {
                    "setsid" => GroupMode::Setsid,
                    "pgrp" => GroupMode::Pgrp,
                    _ => return Err(bad()),
                },
            }),
            ["done", id, code, rest @ ..] => Ok(Event::Done {
                id: StepId::new(id).map_err(|_| bad())?,
                code: code.parse().map_err(|_| bad())?,
                oom: match rest {
                    ["oom", limit, ..] => Some(OomKill {
                        limit_bytes: limit.parse().ok(),
                    }),
                    _ => None,
                },
            }),
            ["error", id, reason, ..] => Ok(Event::Error {
                id: (*id).to_owned(),
                reason: (*reason).to_owned(),
            }),
            ["exit", code, ..] => Ok(Event::Exited {
                code: code.parse().map_err(|_| bad())?,
            }),
            _ => Err(bad()),
        }
    }
}

/// What the wrapper saw of an OOM kill during a step (`done <id> <code> oom <limit>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OomKill {
    /// The build container's memory limit in bytes, when it has one.
    pub limit_bytes: Option<u64>,
}

impl OomKill {
    /// One sentence for the job log: what ran out of memory, and its limit.
    pub fn message(&self, container: &str) -> String {
        match self.limit_bytes {
            Some(limit) => format!(
                "Container {container:?} ran out of memory: the kernel's OOM killer ended the \
                 step, which used more than the container's memory limit of {}",
                format_bytes(limit)
            ),
            None => format!(
                "Container {container:?} ran out of memory: the kernel's OOM killer ended the \
                 step (the container has no memory limit: the node ran out of memory)"
            ),
        }
    }
}

/// Bytes as a Kubernetes quantity when they are a whole number of binary units (`32Mi`),
/// else as bytes.
pub fn format_bytes(n: u64) -> String {
    for (unit, size) in [
        ("Ti", 1u64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{}{unit}", n / size);
        }
    }
    format!("{n} bytes")
}

/// The signal that ended a step, from a `done` exit status (`143` → `Some(15)`).
pub fn exit_signal(code: i32) -> Option<i32> {
    (129..=192).contains(&code).then(|| code - 128)
}

/// A malformed identifier or event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Not a [`StepId`].
    #[error(
        "invalid step id {0:?}: expected 1-64 characters of [A-Za-z0-9_.-] starting with a letter or digit"
    )]
    BadStepId(String),
    /// Not an event line.
    #[error("malformed wrapper event {0:?}")]
    BadEvent(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_ids() {
        for ok in ["0", "step_script", "after_script.1", "a-b"] {
            assert!(StepId::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "-x", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(StepId::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_lines() {
        let id = StepId::new("s1").unwrap();
        assert_eq!(Request::Run(id.clone()).line(), "run s1\n");
        let cancel = Request::Cancel {
            id,
            grace: Duration::from_millis(2500),
        };
        assert_eq!(cancel.line(), "cancel s1 3\n");
        assert_eq!(Request::Exit.line(), "exit\n");
    }

    #[test]
    fn events() {
        assert_eq!(
            Event::parse("ready 1 /bin/bash setsid\n").unwrap(),
            Event::Ready {
                version: 1,
                shell: "/bin/bash".into(),
                mode: GroupMode::Setsid
            }
        );
        assert_eq!(
            Event::parse("done s1 137").unwrap(),
            Event::Done {
                id: StepId::new("s1").unwrap(),
                code: 137,
                oom: None,
            }
        );
        assert_eq!(
            Event::parse("done s1 137 oom 33554432").unwrap(),
            Event::Done {
                id: StepId::new("s1").unwrap(),
                code: 137,
                oom: Some(OomKill {
                    limit_bytes: Some(32 << 20)
                }),
            }
        );
        assert_eq!(
            Event::parse("done s1 1 oom -").unwrap(),
            Event::Done {
                id: StepId::new("s1").unwrap(),
                code: 1,
                oom: Some(OomKill { limit_bytes: None }),
            }
        );
        // Fields a newer wrapper adds are ignored.
        assert_eq!(
            Event::parse("done s1 0 later 1").unwrap(),
            Event::Done {
                id: StepId::new("s1").unwrap(),
                code: 0,
                oom: None,
            }
        );
        assert_eq!(
            Event::parse("exit 143").unwrap(),
            Event::Exited { code: 143 }
        );
        assert!(Event::parse("exit").is_err());
        assert_eq!(
            Event::parse("error s1 busy").unwrap(),
            Event::Error {
                id: "s1".into(),
                reason: "busy".into()
            }
        );
        assert!(Event::parse("done s1").is_err());
        assert!(Event::parse("hello").is_err());
        assert_eq!(exit_signal(143), Some(15));
        assert_eq!(exit_signal(3), None);
    }

    #[test]
    fn oom_messages_name_the_container_and_limit() {
        assert_eq!(format_bytes(32 << 20), "32Mi");
        assert_eq!(format_bytes(3 << 30), "3Gi");
        assert_eq!(format_bytes(1536), "1536 bytes");
        assert_eq!(format_bytes(2048), "2Ki");
        assert_eq!(format_bytes(1000), "1000 bytes");
        assert_eq!(
            OomKill {
                limit_bytes: Some(32 << 20)
            }
            .message("build"),
            "Container \"build\" ran out of memory: the kernel's OOM killer ended the step, \
             which used more than the container's memory limit of 32Mi"
        );
        assert!(
            OomKill { limit_bytes: None }
                .message("build")
                .contains("no memory limit")
        );
    }

    #[test]
    fn layout_paths() {
        let layout = Layout::default();
        let id = StepId::new("s1").unwrap();
        assert_eq!(layout.control(), Path::new("/oar/scripts/control"));
        assert_eq!(layout.script(&id), Path::new("/oar/scripts/s1.sh"));
        assert_eq!(layout.output(&id), Path::new("/oar/logs/s1.out"));
        assert_eq!(
            Layout::temporary(&layout.status()),
            Path::new("/oar/scripts/status.tmp")
        );
    }
}

//! The build container's step wrapper and its protocol with the helper agent.
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
//!   `SIGKILL` to it after the grace period (whole seconds; 10 when missing or not a number).
//!   Ignored unless `<id>` is the running step (so a cancel racing with the step's end is
//!   harmless); a second cancel of the same step is ignored. The step still ends with `done`
//!   (143 or 137, or its own code if it exits on its own). `SIGKILL` is sent even if the group
//!   seems gone: a shell that traps `SIGTERM` runs the trap only after its foreground command,
//!   and a child caught between `fork` and `exec` can miss the group's `SIGTERM`.
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

pub use oar_job::podstep::{
    CONTROL_FIFO, DEFAULT_LOGS_DIR, DEFAULT_SCRIPTS_DIR, ENV_LOGS_DIR, ENV_NO_SETSID,
    ENV_SCRIPTS_DIR, ENV_STEP_SHELL, Event, GroupMode, Layout, OomKill, PROTOCOL_VERSION,
    ProtocolError, Request, STATUS_FIFO, StepId, exit_signal, format_bytes,
};

/// The wrapper script (POSIX `sh`). See the [module documentation](self) for the protocol.
pub const WRAPPER: &str = include_str!("wrapper.sh");

/// The build container's `command`: `["/bin/sh", "-c", WRAPPER]`.
pub fn command() -> Vec<String> {
    vec!["/bin/sh".to_owned(), "-c".to_owned(), WRAPPER.to_owned()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_container_runs_the_wrapper_with_sh() {
        assert_eq!(command()[..2], ["/bin/sh", "-c"]);
        assert!(command()[2].contains("ready"));
    }
}

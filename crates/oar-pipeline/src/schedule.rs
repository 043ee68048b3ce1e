//! Which planned jobs can start, given how the finished ones ended.
//!
//! A job with `needs` waits for those jobs; a job without waits for every job of the earlier
//! stages. Then its `when` decides: `on_success` runs when nothing it waited for failed (an
//! allowed failure is not a failure), `on_failure` only when something failed, `always`
//! regardless. A manual job runs only when the user asked for it; a manual job with
//! `allow_failure: false` that does not run blocks the later stages (and the jobs that need
//! it). Each [`Scheduler::poll`] is linear in the number of jobs plus needs.

use serde::Serialize;

use crate::model::When;
use crate::plan::Plan;

/// How a job that ran ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It passed.
    Success,
    /// It failed, with the script's exit code when there is one.
    Failed {
        /// The exit code.
        exit_code: Option<i32>,
    },
    /// It was cancelled.
    Canceled,
}

/// A job's state as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for earlier jobs.
    Pending,
    /// Handed out by [`Scheduler::poll`], not finished yet.
    Running,
    /// Passed.
    Success,
    /// Failed, but `allow_failure` allowed it.
    FailedAllowed,
    /// Failed.
    Failed,
    /// Cancelled.
    Canceled,
    /// Not run because of what happened before (with the reason).
    Skipped(String),
    /// A manual job nobody asked to run.
    Manual,
    /// Never runs: a blocking manual job did not run before it.
    Blocked(String),
}

impl JobState {
    fn done(&self) -> bool {
        !matches!(self, Self::Pending | Self::Running)
    }

    fn failed(&self) -> bool {
        matches!(self, Self::Failed | Self::Canceled)
    }
}

/// What to do with a job now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start it (after `delay_seconds` for delayed jobs).
    Run {
        /// Its position in [`Plan::jobs`].
        job: usize,
        /// `start_in` of a delayed job.
        delay_seconds: Option<u64>,
    },
    /// Do not run it; tell the user why.
    Skip {
        /// Its position.
        job: usize,
        /// Why.
        reason: String,
    },
    /// A manual job that waits for a person (`--manual JOB`).
    Manual {
        /// Its position.
        job: usize,
        /// Whether it blocks the later stages.
        blocking: bool,
    },
    /// It will never run: it waits behind a manual job that does not run.
    Blocked {
        /// Its position.
        job: usize,
        /// Why.
        reason: String,
    },
}

/// Hands out the jobs of a plan as they become ready.
#[derive(Debug)]
pub struct Scheduler<'p> {
    plan: &'p Plan,
    states: Vec<JobState>,
}

impl<'p> Scheduler<'p> {
    /// A scheduler with every job pending.
    pub fn new(plan: &'p Plan) -> Self {
        Self {
            plan,
            states: vec![JobState::Pending; plan.jobs.len()],
        }
    }

    /// The state of the job at `index`.
    pub fn state(&self, index: usize) -> Option<&JobState> {
        self.states.get(index)
    }

    /// Records how a running job ended.
    pub fn finish(&mut self, index: usize, outcome: Outcome) {
        let Some(job) = self.plan.jobs.get(index) else {
            return;
        };
        let state = match outcome {
            Outcome::Success => JobState::Success,
            Outcome::Failed { exit_code } if job.failure_allowed(exit_code) => {
                JobState::FailedAllowed
            }
            Outcome::Failed { .. } => JobState::Failed,
            Outcome::Canceled => JobState::Canceled,
        };
        self.states[index] = state;
    }

    /// Whether every job has reached a final state.
    pub fn is_done(&self) -> bool {
        self.states.iter().all(JobState::done)
    }

    /// Whether the pipeline failed (a job failed without being allowed to).
    pub fn failed(&self) -> bool {
        self.states.iter().any(JobState::failed)
    }

    /// Decides every job that can be decided now; jobs handed out as [`Decision::Run`] are
    /// [`JobState::Running`] until [`Scheduler::finish`].
    pub fn poll(&mut self) -> Vec<Decision> {
        let mut out = Vec::new();
        // Decisions can unlock others (a skip finishes a job), so loop until nothing changes.
        loop {
            let before = out.len();
            self.poll_once(&mut out);
            if out.len() == before {
                return out;
            }
        }
    }

    fn poll_once(&mut self, out: &mut Vec<Decision>) {
        let nstages = self.plan.stages.len();
        // Per stage: every job done, some job failed, some job blocks.
        let mut done = vec![true; nstages];
        let mut failed = vec![false; nstages];
        let mut blocks = vec![false; nstages];
        for (job, st) in self.plan.jobs.iter().zip(&self.states) {
            let s = job.stage_index.min(nstages.saturating_sub(1));
            done[s] &= st.done();
            failed[s] |= st.failed();
            let blocking_manual = *st == JobState::Manual && !job.allow_failure.allowed;
            blocks[s] |= blocking_manual || matches!(st, JobState::Blocked(_));
        }
        // Prefix: everything before stage s.
        let mut prev_done = vec![true; nstages + 1];
        let mut prev_failed = vec![false; nstages + 1];
        let mut prev_blocked = vec![false; nstages + 1];
        for s in 0..nstages {
            prev_done[s + 1] = prev_done[s] && done[s];
            prev_failed[s + 1] = prev_failed[s] || failed[s];
            prev_blocked[s + 1] = prev_blocked[s] || blocks[s];
        }
        for i in 0..self.plan.jobs.len() {
            if self.states[i] != JobState::Pending {
                continue;
            }
            let job = &self.plan.jobs[i];
            let s = job.stage_index.min(nstages.saturating_sub(1));
            let (any_failed, any_skipped) = match self.plan.needs_of(i) {
                Some(needs) => {
                    let mut any_failed = false;
                    let mut any_skipped = false;
                    let mut wait = false;
                    let mut blocked = None;
                    for &n in needs {
                        match &self.states[n] {
                            JobState::Pending | JobState::Running => wait = true,
                            JobState::Manual | JobState::Blocked(_) => blocked = Some(n),
                            JobState::Skipped(_) => any_skipped = true,
                            st => any_failed |= st.failed(),
                        }
                    }
                    if let Some(n) = blocked {
                        let reason =
                            format!("needs {:?}, which did not run", self.plan.jobs[n].name);
                        self.states[i] = JobState::Blocked(reason.clone());
                        out.push(Decision::Blocked { job: i, reason });
                        continue;
                    }
                    if wait {
                        continue;
                    }
                    (any_failed, any_skipped)
                }
                None => {
                    if prev_blocked[s] {
                        let reason =
                            "a manual job of an earlier stage blocks the pipeline".to_owned();
                        self.states[i] = JobState::Blocked(reason.clone());
                        out.push(Decision::Blocked { job: i, reason });
                        continue;
                    }
                    if !prev_done[s] {
                        continue;
                    }
                    (prev_failed[s], false)
                }
            };
            let skip = |this: &mut Self, out: &mut Vec<Decision>, reason: &str| {
                this.states[i] = JobState::Skipped(reason.to_owned());
                out.push(Decision::Skip {
                    job: i,
                    reason: reason.to_owned(),
                });
            };
            let run = |this: &mut Self, out: &mut Vec<Decision>, delay: Option<u64>| {
                this.states[i] = JobState::Running;
                out.push(Decision::Run {
                    job: i,
                    delay_seconds: delay,
                });
            };
            match job.when {
                When::OnSuccess | When::Delayed | When::Manual if any_failed => {
                    skip(self, out, "an earlier job failed")
                }
                When::OnSuccess | When::Delayed | When::Manual if any_skipped => {
                    skip(self, out, "a needed job was skipped")
                }
                When::OnSuccess => run(self, out, None),
                When::Delayed => run(self, out, job.start_in),
                When::Manual if job.manual_requested => run(self, out, None),
                When::Manual => {
                    self.states[i] = JobState::Manual;
                    out.push(Decision::Manual {
                        job: i,
                        blocking: !job.allow_failure.allowed,
                    });
                }
                When::OnFailure if any_failed => run(self, out, None),
                When::OnFailure => skip(self, out, "when: on_failure and no earlier job failed"),
                When::Always | When::Never => run(self, out, None),
            }
        }
    }
}

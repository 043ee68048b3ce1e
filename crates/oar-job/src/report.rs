//! Streaming the job log to GitLab and sending the final state.
//!
//! The streamer PATCHes new log bytes as they come, at most once per update interval (3 s, or
//! what GitLab asks for) like GitLab Runner, paced by a [`Pacer`]: output that follows a quiet
//! spell of an interval goes out at once, output that keeps coming goes once per interval.
//! Besides, the first output of each step of the user's script (marked by
//! [`TraceLog::expedite`]) goes out as it comes for a moment (a second, three PATCHes at most),
//! so a step's first lines show in GitLab within milliseconds of the step starting, at the cost
//! of a few PATCHes per step (`script`, `after_script`). Output waits
//! [`ReporterConfig::coalesce`] for more before any PATCH, so a burst of writes makes one. It
//! touches the job (`PUT state=running`)
//! when nothing was sent for a while, and watches every answer for `Job-Status` to turn
//! GitLab's cancel requests into [`JobControl`] signals. When the job is done, [`Reporter::finish`]
//! sends what is left and the final state, looping on `202` and resyncing on `416`, so that
//! GitLab holds exactly the bytes whose checksum it is given.
//!
//! A reporter that did not stream the job itself (the Kubernetes manager reporting for a pod
//! that could not, after the pod's helper streamed part of the log) uses
//! [`Reporter::append_and_finish`]: its lines go after GitLab's trace, wherever a `416` says it
//! ends, and the final state carries no checksum unless its lines are the whole trace.

use crate::outcome::JobOutcome;
use crate::runner::JobControl;
use crate::tracelog::TraceLog;
use oar_gitlab::{
    Client, JobOutput, PatchOutcome, RemoteJobState, Token, UpdateJobRequest, UpdateOutcome,
    VersionInfo,
};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Timings of the streamer.
#[derive(Debug, Clone)]
pub struct ReporterConfig {
    /// Default interval between PATCHes (GitLab Runner: 3 s).
    pub interval: Duration,
    /// Touch the job when nothing was sent for this long (GitLab Runner: 30 s).
    pub force_send_interval: Duration,
    /// Attempts of the final phase (`job_status_final_update_retry_limit`, default 10).
    pub final_retry_limit: u32,
    /// Largest PATCH body (1 MiB).
    pub max_patch: usize,
    /// PATCHes that may go back to back after a quiet spell (see [`Pacer`]); at least 1, and 1
    /// (GitLab Runner's cadence) by default.
    pub burst: u32,
    /// How long new output waits for more before a PATCH that could go at once.
    pub coalesce: Duration,
    /// After a step of the user's script first prints, its output goes out as it comes (each
    /// PATCH after [`coalesce`](Self::coalesce)) for this long...
    pub expedite_window: Duration,
    /// ...or for this many PATCHes, whichever ends first; then the cadence resumes.
    pub expedite_patches: u32,
}

/// The moment after a step's first output, when PATCHes are not paced.
#[derive(Debug, Clone, Copy)]
struct Expedite {
    until: Instant,
    left: u32,
}

impl Default for ReporterConfig {
    fn default() -> Self {
        ReporterConfig {
            interval: Duration::from_secs(3),
            force_send_interval: Duration::from_secs(30),
            final_retry_limit: 10,
            max_patch: 1024 * 1024,
            burst: 1,
            coalesce: Duration::from_millis(10),
            expedite_window: Duration::from_secs(1),
            expedite_patches: 3,
        }
    }
}

/// When the streamer may PATCH: a token bucket in its GCRA form. Each PATCH costs one interval
/// of credit; up to `burst` PATCHes may go back to back, and credit comes back at one PATCH per
/// interval. Over any stretch longer than `burst` intervals, at most one PATCH per interval
/// (plus the burst) is sent, as with GitLab Runner's fixed cadence, but the first output after
/// a quiet spell does not wait for the next tick.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    burst: u32,
    /// The theoretical time of the next PATCH if the bucket had a depth of one.
    tat: Option<Instant>,
}

impl Pacer {
    /// A full bucket of `burst` PATCHes (at least one).
    pub fn new(burst: u32) -> Self {
        Pacer {
            burst: burst.max(1),
            tat: None,
        }
    }

    /// The earliest time the next PATCH may go, at `interval` between PATCHes on average.
    pub fn next_allowed(&self, now: Instant, interval: Duration) -> Instant {
        let Some(tat) = self.tat else { return now };
        let tolerance = interval.saturating_mul(self.burst - 1);
        tat.checked_sub(tolerance).map_or(now, |t| t.max(now))
    }

    /// Records a PATCH sent at `now`.
    pub fn sent(&mut self, now: Instant, interval: Duration) {
        let base = self.tat.map_or(now, |t| t.max(now));
        self.tat = Some(base + interval);
    }
}

/// Talks to GitLab about one job, with the job's token.
#[derive(Debug, Clone)]
pub struct Reporter {
    client: Client,
    job_id: i64,
    token: Token,
    info: VersionInfo,
    debug_trace: bool,
    failure_reasons: Vec<String>,
    cfg: ReporterConfig,
    deadline: Option<Instant>,
}

/// When a job that started at `started` is over its timeout (`runner_info.timeout`, the
/// default 2 h when unset): the final state is retried until then.
pub fn job_deadline(job: &oar_gitlab::JobResponse, started: Instant) -> Instant {
    let secs = u64::try_from(job.runner_info.timeout)
        .ok()
        .filter(|s| *s > 0)
        .unwrap_or(crate::context::DEFAULT_JOB_TIMEOUT.as_secs());
    started + Duration::from_secs(secs)
}

/// Whether the final phase tries again after `failures` failed attempts: bounded by the retry
/// limit, or by the job's deadline when that is later.
fn keep_trying(failures: u32, limit: u32, deadline: Option<Instant>, now: Instant) -> bool {
    failures < limit || deadline.is_some_and(|d| now < d)
}

/// Where the streamer got to.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamState {
    /// Bytes GitLab holds.
    pub sent: u64,
    /// The current update interval.
    pub interval: Option<Duration>,
}

/// Where a reporter's log is in GitLab's trace.
#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    /// GitLab's offset of the log's first byte: 0, unless others wrote to the trace first.
    base: u64,
    /// Bytes of the log GitLab holds.
    sent: u64,
    /// Others may have written to the trace before this log (see
    /// [`Reporter::append_and_finish`]): a `416` says where their bytes end.
    appending: bool,
}

impl Cursor {
    /// GitLab's offset of the next byte to send.
    fn offset(&self) -> u64 {
        self.base + self.sent
    }

    /// GitLab says its trace is `len` bytes long (a `416`).
    fn resync(&mut self, len: u64, log_len: u64) {
        if !self.appending {
            self.sent = len.min(log_len);
        } else if len >= self.offset() {
            // Someone else's bytes: the rest of ours goes after them.
            self.base = len - self.sent;
        } else if len >= self.base {
            self.sent = len - self.base;
        } else {
            self.base = len;
            self.sent = 0;
        }
    }

    /// Whether the log is the whole trace, so its checksum and size are the trace's.
    fn whole(&self) -> bool {
        self.base == 0
    }
}

impl Reporter {
    /// A reporter for job `job_id`.
    pub fn new(
        client: Client,
        job_id: i64,
        token: Token,
        info: VersionInfo,
        failure_reasons: Vec<String>,
        cfg: ReporterConfig,
    ) -> Self {
        Reporter {
            client,
            job_id,
            token,
            info,
            debug_trace: false,
            failure_reasons,
            cfg,
            deadline: None,
        }
    }

    /// Keeps retrying the final state past [`ReporterConfig::final_retry_limit`] until
    /// `deadline` (the job's timeout): a GitLab that is down for minutes still gets the whole
    /// trace and the state once it is back, if it comes back before the job would have timed out.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The job this reporter reports.
    pub fn job_id(&self) -> i64 {
        self.job_id
    }

    /// Marks the trace as a debug trace (`CI_DEBUG_TRACE`).
    pub fn with_debug_trace(mut self, on: bool) -> Self {
        self.debug_trace = on;
        self
    }

    fn apply_remote(&self, remote: &RemoteJobState, control: &JobControl, interval: &mut Duration) {
        if let Some(i) = remote.update_interval {
            *interval = i;
        }
        if remote.is_aborted() {
            control.aborted.cancel();
        } else if remote.is_canceling() && !control.canceling.is_cancelled() {
            tracing::info!(job_id = self.job_id, "GitLab asked to cancel the job");
            control.canceling.cancel();
        }
    }

    async fn patch(
        &self,
        log: &TraceLog,
        cursor: &mut Cursor,
        control: &JobControl,
        interval: &mut Duration,
    ) -> bool {
        let data = log.read(cursor.sent, self.cfg.max_patch);
        if data.is_empty() {
            return true;
        }
        match self
            .client
            .patch_trace(
                self.job_id,
                &self.token,
                cursor.offset(),
                data,
                self.debug_trace,
            )
            .await
        {
            Ok((outcome, remote)) => {
                self.apply_remote(&remote, control, interval);
                match outcome {
                    PatchOutcome::Sent { offset } => {
                        cursor.sent = offset.saturating_sub(cursor.base);
                        true
                    }
                    PatchOutcome::RangeMismatch { offset } => {
                        if cursor.appending {
                            tracing::debug!(
                                job_id = self.job_id,
                                offset,
                                "GitLab's trace holds other bytes; appending after them"
                            );
                        } else {
                            tracing::warn!(
                                job_id = self.job_id,
                                offset,
                                "trace offset mismatch; resuming at GitLab's offset"
                            );
                        }
                        cursor.resync(offset, log.len());
                        false
                    }
                    PatchOutcome::Abort(status) => {
                        tracing::warn!(
                            job_id = self.job_id,
                            status,
                            "GitLab refused the trace; stopping the job"
                        );
                        control.aborted.cancel();
                        false
                    }
                    PatchOutcome::Retry(status) => {
                        tracing::warn!(
                            job_id = self.job_id,
                            status,
                            "trace update failed; will retry"
                        );
                        false
                    }
                }
            }
            Err(e) => {
                tracing::warn!(job_id = self.job_id, error = %e, "trace update failed; will retry");
                false
            }
        }
    }

    async fn touch(&self, log: &TraceLog, control: &JobControl, interval: &mut Duration) {
        let req = self.update_request("running", log, None, true);
        match self.client.update_job(self.job_id, &req).await {
            Ok((UpdateOutcome::Abort(status), remote)) => {
                self.apply_remote(&remote, control, interval);
                tracing::warn!(
                    job_id = self.job_id,
                    status,
                    "GitLab refused a keep-alive; stopping the job"
                );
                control.aborted.cancel();
            }
            Ok((_, remote)) => self.apply_remote(&remote, control, interval),
            Err(e) => tracing::warn!(job_id = self.job_id, error = %e, "keep-alive failed"),
        }
    }

    /// Streams `log` until `done` fires, feeding cancel requests into `control`.
    pub async fn stream(
        &self,
        log: TraceLog,
        control: JobControl,
        done: CancellationToken,
    ) -> StreamState {
        let mut cursor = Cursor::default();
        let mut interval = self.cfg.interval;
        let mut pacer = Pacer::new(self.cfg.burst);
        let mut window: Option<Expedite> = None;
        // When the streamer saw the bytes it has not sent yet.
        let mut pending_since = Some(Instant::now());
        let mut last_contact = Instant::now();
        loop {
            let changed = log.changed();
            tokio::pin!(changed);
            if cursor.sent < log.len() {
                let mut now = Instant::now();
                // A step of the user's script started and printed: its first output goes
                // out as it comes for a moment, outside the pacer's budget.
                let mark = log.expedite_mark();
                if let Some(m) = mark.filter(|&m| log.len() > m) {
                    log.clear_expedite(m);
                    window = Some(Expedite {
                        until: now + self.cfg.expedite_window,
                        left: self.cfg.expedite_patches,
                    });
                    // Wait the coalescing time from the step's first byte.
                    pending_since = Some(now);
                }
                let fast = window.is_some_and(|w| now < w.until && w.left > 0);
                let seen = *pending_since.get_or_insert(now);
                let due = if fast {
                    seen
                } else {
                    pacer.next_allowed(now, interval).max(seen)
                } + self.cfg.coalesce;
                // While waiting for the cadence, look again when a step starts, and once one
                // started, when it prints.
                let waiting = !fast && !log.is_finished();
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    _ = log.expedited(), if waiting && mark.is_none() => continue,
                    _ = &mut changed, if waiting && mark.is_some() => continue,
                    _ = done.cancelled() => break,
                }
                now = Instant::now();
                self.patch(&log, &mut cursor, &control, &mut interval).await;
                match &mut window {
                    Some(w) if fast => w.left = w.left.saturating_sub(1),
                    // Paced at the interval GitLab's answer asked for.
                    _ => pacer.sent(now, interval),
                }
                pending_since = None;
                last_contact = Instant::now();
            } else {
                let touch_at = last_contact + self.cfg.force_send_interval;
                tokio::select! {
                    _ = &mut changed => {
                        pending_since = Some(Instant::now());
                    }
                    // A periodic look, in case a write raced the check above.
                    _ = tokio::time::sleep(interval) => {}
                    _ = tokio::time::sleep_until(touch_at) => {
                        self.touch(&log, &control, &mut interval).await;
                        last_contact = Instant::now();
                    }
                    _ = done.cancelled() => break,
                }
            }
        }
        StreamState {
            sent: cursor.sent,
            interval: Some(interval),
        }
    }

    /// A `PUT` body; `whole`: the log is all of GitLab's trace, so its checksum and size are
    /// sent (else neither: GitLab then takes the state without checking the trace).
    fn update_request(
        &self,
        state: &str,
        log: &TraceLog,
        outcome: Option<&JobOutcome>,
        whole: bool,
    ) -> UpdateJobRequest {
        let (checksum, bytesize) = if whole {
            (log.checksum(), log.len())
        } else {
            (String::new(), 0)
        };
        UpdateJobRequest {
            info: self.info.clone(),
            token: self.token.clone(),
            state: state.to_string(),
            failure_reason: outcome
                .and_then(|o| o.failure)
                .map(|f| f.for_server(&self.failure_reasons).to_string())
                .unwrap_or_default(),
            checksum: checksum.clone(),
            output: JobOutput { checksum, bytesize },
            exit_code: outcome.and_then(|o| o.exit_code).unwrap_or(0),
        }
    }

    /// Sends the rest of the log and the final state. Returns whether GitLab accepted it.
    pub async fn finish(&self, log: &TraceLog, outcome: &JobOutcome, state: StreamState) -> bool {
        let cursor = Cursor {
            sent: state.sent,
            ..Cursor::default()
        };
        self.finish_from(log, outcome, cursor, state.interval).await
    }

    /// Sends `log` after whatever trace GitLab already holds for the job, then the final
    /// state; for a reporter that did not stream the job itself (the Kubernetes manager
    /// reporting for a pod that could not, after the pod's helper may have streamed part of
    /// the log). The first `416` says where the trace ends; the log goes after it. The
    /// checksum and size of the trace are sent only when the log turned out to be all of it
    /// (GitLab held nothing before): this reporter can't know the other bytes. Returns whether
    /// GitLab accepted the final state.
    pub async fn append_and_finish(&self, log: &TraceLog, outcome: &JobOutcome) -> bool {
        let cursor = Cursor {
            appending: true,
            ..Cursor::default()
        };
        self.finish_from(log, outcome, cursor, None).await
    }

    async fn finish_from(
        &self,
        log: &TraceLog,
        outcome: &JobOutcome,
        mut cursor: Cursor,
        interval: Option<Duration>,
    ) -> bool {
        log.finish();
        let control = JobControl::default();
        let mut interval = interval.unwrap_or(self.cfg.interval).min(self.cfg.interval);
        let mut failures = 0u32;
        let backoff = oar_gitlab::retry::Backoff::new_unchecked(
            Duration::from_secs(1),
            Duration::from_secs(60),
            2,
        );
        let go_on = |failures: u32| {
            keep_trying(
                failures,
                self.cfg.final_retry_limit,
                self.deadline,
                Instant::now(),
            )
        };
        while go_on(failures) {
            let mut stalled = false;
            let mut resynced = false;
            while cursor.sent < log.len() && !control.aborted.is_cancelled() {
                let before = cursor;
                if !self.patch(log, &mut cursor, &control, &mut interval).await {
                    // A 416 that only showed where to append is no failure: send again now.
                    if cursor.appending && !resynced && cursor.offset() != before.offset() {
                        resynced = true;
                        continue;
                    }
                    stalled = true;
                    break;
                }
            }
            if control.aborted.is_cancelled() {
                // GitLab already finalised the job; the final PUT would only get 403.
                return false;
            }
            if stalled {
                failures += 1;
                tokio::time::sleep(backoff.delay(failures)).await;
                continue;
            }
            let req = self.update_request(outcome.state(), log, Some(outcome), cursor.whole());
            match self.client.update_job(self.job_id, &req).await {
                Ok((UpdateOutcome::Ok, _)) => return true,
                Ok((UpdateOutcome::Accepted, remote)) => {
                    let wait = remote
                        .update_interval
                        .unwrap_or(Duration::from_secs(1))
                        .min(Duration::from_secs(60));
                    tracing::debug!(
                        job_id = self.job_id,
                        ?wait,
                        "final update accepted; waiting for GitLab"
                    );
                    tokio::time::sleep(wait).await;
                }
                Ok((UpdateOutcome::TraceReset, _)) => {
                    tracing::warn!(
                        job_id = self.job_id,
                        "GitLab asked for the whole trace again"
                    );
                    // GitLab checked a checksum, which goes only with a log that is the whole
                    // trace: no one else's bytes are in it, so the next 416 says how much of
                    // ours GitLab kept (appending after it would repeat that much).
                    if cursor.whole() {
                        cursor.appending = false;
                    }
                    cursor.sent = 0;
                    failures += 1;
                }
                Ok((UpdateOutcome::Abort(status), _)) => {
                    tracing::warn!(
                        job_id = self.job_id,
                        status,
                        "GitLab refused the final update"
                    );
                    return false;
                }
                Ok((UpdateOutcome::Retry(status), _)) => {
                    failures += 1;
                    tracing::warn!(
                        job_id = self.job_id,
                        status,
                        "final update failed; retrying"
                    );
                    tokio::time::sleep(backoff.delay(failures)).await;
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(job_id = self.job_id, error = %e, "final update failed; retrying");
                    tokio::time::sleep(backoff.delay(failures)).await;
                }
            }
        }
        tracing::error!(job_id = self.job_id, "gave up sending the final job state");
        false
    }

    /// Acknowledges a new job (`PUT state=running`). `Err` carries why the job must be
    /// dropped (403/404/409, or GitLab says it is canceled or failed).
    pub async fn acknowledge(&self, log: &TraceLog, control: &JobControl) -> Result<(), String> {
        let req = self.update_request("running", log, None, true);
        let mut interval = self.cfg.interval;
        match self.client.update_job(self.job_id, &req).await {
            Ok((UpdateOutcome::Abort(status), _)) => {
                Err(format!("GitLab refused the job (status {status})"))
            }
            Ok((_, remote)) if remote.is_aborted() => Err(format!(
                "GitLab says the job is {}",
                remote.status.unwrap_or_default()
            )),
            Ok((_, remote)) => {
                self.apply_remote(&remote, control, &mut interval);
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_final_state_is_retried_until_the_limit_or_the_jobs_deadline() {
        let now = Instant::now();
        // Without a deadline: the limit.
        assert!(keep_trying(9, 10, None, now));
        assert!(!keep_trying(10, 10, None, now));
        // A deadline ahead keeps it going past the limit; one passed does not.
        assert!(keep_trying(500, 10, Some(now + ms(1)), now));
        assert!(!keep_trying(10, 10, Some(now), now));
        // The limit still holds before an earlier deadline.
        assert!(keep_trying(3, 10, Some(now), now + ms(5)));
        let job: oar_gitlab::JobResponse = serde_json::from_value(
            serde_json::json!({"id": 1, "token": "t", "runner_info": {"timeout": 600}}),
        )
        .unwrap();
        assert_eq!(job_deadline(&job, now), now + ms(600_000));
        let no_timeout: oar_gitlab::JobResponse =
            serde_json::from_value(serde_json::json!({"id": 1, "token": "t"})).unwrap();
        assert_eq!(job_deadline(&no_timeout, now), now + ms(7_200_000));
    }

    #[test]
    fn the_pacer_lets_a_burst_through_then_keeps_the_interval() {
        let t0 = Instant::now();
        let i = ms(3000);
        let mut p = Pacer::new(3);
        // Three PATCHes at once after a quiet spell...
        for _ in 0..3 {
            assert_eq!(p.next_allowed(t0, i), t0);
            p.sent(t0, i);
        }
        // ...then one per interval while the job keeps writing.
        assert_eq!(p.next_allowed(t0, i), t0 + ms(3000));
        p.sent(t0 + ms(3000), i);
        assert_eq!(p.next_allowed(t0 + ms(3000), i), t0 + ms(6000));
        p.sent(t0 + ms(6000), i);
        // Over 30 s of constant output: the burst plus one per interval, never more.
        let mut now = t0 + ms(6000);
        let mut sent = 5;
        while now < t0 + ms(30_000) {
            now = p.next_allowed(now + ms(1), i);
            if now >= t0 + ms(30_000) {
                break;
            }
            p.sent(now, i);
            sent += 1;
        }
        assert_eq!(
            sent,
            3 + 9,
            "30 s of output at 3 s per PATCH after a burst of 3"
        );
    }

    #[test]
    fn quiet_spells_earn_the_burst_back_one_interval_at_a_time() {
        let t0 = Instant::now();
        let i = ms(3000);
        let mut p = Pacer::new(3);
        for _ in 0..3 {
            p.sent(t0, i);
        }
        // 3 s of quiet earn one PATCH back: it goes at once, the next one waits.
        let t1 = t0 + ms(3000);
        assert_eq!(p.next_allowed(t1, i), t1);
        p.sent(t1, i);
        assert_eq!(p.next_allowed(t1, i), t1 + ms(3000));
        // A long quiet spell refills the whole bucket but not more.
        let t2 = t1 + ms(60_000);
        for _ in 0..3 {
            assert_eq!(p.next_allowed(t2, i), t2);
            p.sent(t2, i);
        }
        assert_eq!(p.next_allowed(t2, i), t2 + ms(3000));
    }

    #[test]
    fn a_burst_of_one_is_gitlab_runners_fixed_cadence() {
        let t0 = Instant::now();
        let mut p = Pacer::new(0);
        assert_eq!(p.next_allowed(t0, ms(3000)), t0);
        p.sent(t0, ms(3000));
        assert_eq!(p.next_allowed(t0 + ms(10), ms(3000)), t0 + ms(3000));
        // GitLab asked for a slower cadence: the next PATCH keeps the old spacing once.
        p.sent(t0 + ms(3000), ms(30_000));
        assert_eq!(p.next_allowed(t0 + ms(3000), ms(30_000)), t0 + ms(33_000));
    }

    #[test]
    fn a_streaming_reporter_resumes_at_gitlabs_offset() {
        let mut c = Cursor {
            sent: 100,
            ..Cursor::default()
        };
        c.resync(60, 200);
        assert_eq!((c.base, c.sent, c.offset()), (0, 60, 60));
        // GitLab holds more than the log: nothing left to send.
        c.resync(500, 200);
        assert_eq!(c.sent, 200);
        assert!(c.whole());
    }

    #[test]
    fn an_appending_reporter_goes_after_the_bytes_of_others() {
        let mut c = Cursor {
            appending: true,
            ..Cursor::default()
        };
        assert!(c.whole());
        // The pod's helper streamed 390 bytes: ours go after them.
        c.resync(390, 80);
        assert_eq!((c.base, c.sent, c.offset()), (390, 0, 390));
        assert!(!c.whole());
        // 30 of ours sent, then the helper added 10 more: the rest goes after those.
        c.sent = 30;
        c.resync(430, 80);
        assert_eq!((c.base, c.sent, c.offset()), (400, 30, 430));
        // GitLab lost some of ours: resend them.
        c.resync(410, 80);
        assert_eq!((c.base, c.sent, c.offset()), (400, 10, 410));
        // GitLab holds less than our start: start over there.
        c.resync(100, 80);
        assert_eq!((c.base, c.sent, c.offset()), (100, 0, 100));
    }
}

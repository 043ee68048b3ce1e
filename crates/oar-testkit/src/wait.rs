//! Event-driven waiting: every wait re-checks the state after each change (a `watch` counter
//! bumped by every write) until its condition holds or the timeout passes. No sleeps.

use std::time::Duration;

use anyhow::{Context, bail};

use crate::handle::FakeGitlab;
use crate::state::Job;
use crate::types::{Endpoint, JobSnapshot, JobState, RequestRecord};

impl FakeGitlab {
    async fn wait_job(
        &self,
        id: i64,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Job) -> bool,
    ) -> anyhow::Result<JobSnapshot> {
        let got = self
            .shared()
            .wait_until(timeout, |st| {
                st.jobs.get(&id).filter(|j| pred(j)).map(Job::snapshot)
            })
            .await;
        match got {
            Some(s) => Ok(s),
            None => match self.try_job(id) {
                None => bail!("no job {id}"),
                Some(s) => bail!(
                    "timed out after {timeout:?} waiting for job {id} to {what}; it is {} \
                     (acknowledged: {}, finished: {}), trace:\n{}",
                    s.state,
                    s.acknowledged,
                    s.finished,
                    s.trace_str()
                ),
            },
        }
    }

    /// Wait until the job is `success`/`failed`/`canceled` and finished (its final PUT was
    /// answered 200, or the server ended it).
    pub async fn wait_job_finished(
        &self,
        id: i64,
        timeout: Duration,
    ) -> anyhow::Result<JobSnapshot> {
        self.wait_job(id, timeout, "finish", |j| {
            j.finished && j.state.is_terminal()
        })
        .await
    }

    /// Wait until the job is in `state`.
    pub async fn wait_job_state(
        &self,
        id: i64,
        state: JobState,
        timeout: Duration,
    ) -> anyhow::Result<JobSnapshot> {
        self.wait_job(id, timeout, &format!("be {state}"), |j| j.state == state)
            .await
    }

    /// Wait until the job's stored trace contains `needle`.
    pub async fn wait_trace_contains(
        &self,
        id: i64,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let needle = needle.as_bytes().to_vec();
        let what = format!("log {:?}", String::from_utf8_lossy(&needle));
        self.wait_job(id, timeout, &what, |j| {
            needle.is_empty()
                || j.trace
                    .windows(needle.len())
                    .any(|w| w == needle.as_slice())
        })
        .await
        .map(drop)
    }

    /// Wait until at least `n` requests to `endpoint` have been answered (or reset).
    pub async fn wait_requests(
        &self,
        endpoint: Endpoint,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<RequestRecord>> {
        let done =
            |r: &RequestRecord| r.endpoint == Some(endpoint) && (r.status.is_some() || r.reset);
        let got = self
            .shared()
            .wait_until(timeout, |st| {
                let hits: Vec<RequestRecord> =
                    st.requests.iter().filter(|r| done(r)).cloned().collect();
                (hits.len() >= n).then_some(hits)
            })
            .await;
        got.with_context(|| {
            format!("timed out after {timeout:?} waiting for {n} {endpoint:?} requests")
        })
    }

    /// Wait until a request to `endpoint` was answered as `matches` wants (e.g. with a 403).
    pub async fn wait_request(
        &self,
        endpoint: Endpoint,
        matches: impl Fn(&RequestRecord) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<RequestRecord> {
        let got = self
            .shared()
            .wait_until(timeout, |st| {
                st.requests
                    .iter()
                    .find(|r| r.endpoint == Some(endpoint) && matches(r))
                    .cloned()
            })
            .await;
        got.with_context(|| {
            format!("timed out after {timeout:?} waiting for a matching {endpoint:?} request")
        })
    }

    /// Wait until at least `n` requests to `endpoint` have arrived, answered or still in flight
    /// (e.g. a `/jobs/request` being long-polled).
    pub async fn wait_arrivals(
        &self,
        endpoint: Endpoint,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let got = self
            .shared()
            .wait_until(timeout, |st| {
                let count = st
                    .requests
                    .iter()
                    .filter(|r| r.endpoint == Some(endpoint))
                    .count();
                (count >= n).then_some(())
            })
            .await;
        got.with_context(|| {
            format!("timed out after {timeout:?} waiting for {n} {endpoint:?} arrivals")
        })
    }
}

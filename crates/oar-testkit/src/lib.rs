//! Test kit for Oar: [`FakeGitlab`], a stateful fake GitLab that speaks the runner API
//! (`shared/docs/reference/gitlab-runner-api.md`) and serves git over smart HTTP, with fault
//! injection.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use oar_testkit::{FakeGitlab, JobSpec};
//!
//! let gitlab = FakeGitlab::start().await?;
//! gitlab.add_runner("glrt-test-runner-token-0001");
//! gitlab.create_repo("acme/widget", &[("README.md", "hello\n")])?;
//! let job = gitlab.enqueue_job(JobSpec::new("acme/widget").script(["cat README.md"]));
//! // ... run the runner under test against gitlab.url() ...
//! let done = gitlab.wait_job_finished(job, Duration::from_secs(60)).await?;
//! assert!(done.checksum_matches);
//! # Ok(())
//! # }
//! ```
//!
//! The same server runs outside Rust tests as the `fake-gitlab` binary, driven through a JSON
//! admin API under `/_fake/` ([`StartOptions::admin_api`]); see the crate's README.
//!
//! The server enforces the protocol invariants GitLab enforces (tokens, job states, trace
//! continuity with 416, two-phase job commit, the 202 final-update loop) and records what
//! GitLab would merely tolerate in [`FakeGitlab::violations`].

// Handlers bail out with a ready `Response` as their error; boxing it buys nothing here.
#![allow(clippy::result_large_err)]

mod admin;
mod artifacts;
#[cfg(feature = "cluster")]
pub mod cluster;
mod faults;
mod git;
mod handle;
mod id_tokens;
mod jobs;
mod payload;
mod runners;
pub mod s3;
mod server;
mod spec;
mod state;
mod tls;
pub mod tools;
mod trace;
mod types;
mod util;
mod wait;

pub use handle::{FakeGitlab, StartOptions};
pub use id_tokens::IdTokenSigner;
pub use spec::JobSpec;
pub use tls::TlsOptions;
pub use types::{
    Endpoint, Fault, JobSnapshot, JobState, RequestRecord, RunnerRecord, StoredArtifact,
};

//! GitLab runner API client and wire types.
//!
//! This is the only crate that knows GitLab's URLs and headers. Every call goes through one
//! retrying transport ([`client::Client::send`]) and returns a typed outcome the caller
//! branches on, as GitLab Runner does.

pub mod artifacts;
pub mod client;
pub mod error;
pub mod id_token;
pub mod info;
pub mod jobs;
pub mod retry;
pub mod runners;
pub mod types;

pub use artifacts::{ArtifactUpload, UploadError};
pub use client::{ApiObserver, Client, ClientConfig};
pub use error::Error;
pub use jobs::{JobRequestOutcome, JobRequestResult, PatchOutcome, RemoteJobState, UpdateOutcome};
pub use types::*;

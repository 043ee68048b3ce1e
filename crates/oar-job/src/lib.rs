//! The Oar job driver: stage plan, script generation, variables, masking, trace streaming.
//!
//! An executor implements [`StageRunner`]; [`Driver`] runs a job's stages through it in GitLab
//! Runner's order, writing everything a user sees to a [`TraceLog`], which [`report`] streams
//! to GitLab.

pub mod agent;
pub mod context;
pub mod driver;
pub mod error;
pub mod files;
#[doc(hidden)]
pub mod fuzz;
pub mod mask;
pub mod outcome;
pub mod podstep;
pub mod report;
pub mod runner;
pub mod scripts;
pub mod shell;
pub mod stage;
pub mod tracelog;
pub mod vars;

pub use context::{JobContext, JobSettings, Layout};
pub use driver::{Driver, StageObserver};
pub use error::JobError;
pub use files::{ArtifactStore, CacheUrls, JobFiles};
pub use outcome::{FailureReason, JobOutcome};
pub use runner::{JobControl, StageExit, StageRunner};
pub use stage::{Stage, StageScript};
pub use tracelog::{TraceLog, TraceLogOptions};

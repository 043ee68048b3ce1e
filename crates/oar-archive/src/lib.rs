//! Oar's archives and job caches.
//!
//! - [`select`]: GitLab's artifact/cache path selection (`paths`, `exclude`, `untracked`).
//! - [`archive`]: creating zip, tar.zst, gzip and raw archives, and extracting them safely.
//! - [`s3`], [`remote`], [`cache`]: presigned S3 URLs (manager side), transfers to and from
//!   URLs, and restoring/saving job caches (job side).

pub mod archive;
pub mod cache;
mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod remote;
pub mod s3;
pub mod select;

pub use error::ArchiveError;

//! The helper's termination message: its last word to the manager, read from the helper
//! container's `terminated.message`. The format has one definition,
//! [`oar_job::agent::TerminationMessage`], shared with the agent that writes it (which must
//! not link the Kubernetes client).

pub use oar_job::agent::{FinalState, TERMINATION_MESSAGE_LIMIT, TerminationMessage};

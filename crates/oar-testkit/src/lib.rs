//! Test kit for Oar: a stateful fake GitLab with git smart HTTP and fault injection.

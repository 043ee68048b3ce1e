//! GitLab runner API client and wire types.

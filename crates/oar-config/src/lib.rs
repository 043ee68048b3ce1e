//! GitLab Runner compatible config.toml model: parse, validate, edit.

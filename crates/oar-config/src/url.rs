//! GitLab server URLs.

use std::fmt;

use url::Url;

use crate::path::KeyPath;
use crate::validate::{Issue, IssueKind, non_empty};

/// An `http` or `https` URL (`url`, `clone_url`).
///
/// `Debug` and `Display` hide a password embedded in the URL.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerUrl(Url);

impl ServerUrl {
    /// Parses and checks the scheme.
    pub fn parse(text: &str) -> Result<Self, ServerUrlError> {
        let url = Url::parse(text).map_err(ServerUrlError::Parse)?;
        match url.scheme() {
            "http" | "https" => Ok(Self(url)),
            other => Err(ServerUrlError::Scheme(other.to_owned())),
        }
    }

    /// The URL.
    pub fn as_url(&self) -> &Url {
        &self.0
    }

    /// The URL as written (including any password).
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub(crate) fn optional(path: &KeyPath, value: Option<String>) -> Result<Option<Self>, Issue> {
        non_empty(value)
            .map(|text| {
                Self::parse(&text).map_err(|e| match e {
                    ServerUrlError::Parse(source) => Issue {
                        path: path.clone(),
                        kind: IssueKind::Url(source),
                    },
                    ServerUrlError::Scheme(scheme) => Issue::value(
                        path,
                        format!("expected an http or https URL, found scheme {scheme:?}"),
                    ),
                })
            })
            .transpose()
    }

    pub(crate) fn required(path: &KeyPath, value: Option<String>) -> Result<Self, Issue> {
        Self::optional(path, value)?.ok_or_else(|| Issue::missing(path))
    }
}

/// Why a string is not a [`ServerUrl`].
#[derive(Debug, thiserror::Error)]
pub enum ServerUrlError {
    /// Not a URL at all.
    #[error("invalid URL")]
    Parse(#[source] url::ParseError),
    /// A scheme other than http or https.
    #[error("expected an http or https URL, found scheme {0:?}")]
    Scheme(String),
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.password().is_some() {
            let mut redacted = self.0.clone();
            // Setting a password only fails for URLs without a host, which have none to hide.
            let _ = redacted.set_password(Some("REDACTED"));
            f.write_str(redacted.as_str())
        } else {
            f.write_str(self.0.as_str())
        }
    }
}

impl fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerUrl({:?})", self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_passwords() {
        let url = ServerUrl::parse("https://user:hunter2@gitlab.example.com/").unwrap();
        assert!(!format!("{url:?} {url}").contains("hunter2"));
        assert!(url.as_str().contains("hunter2"));
        assert!(matches!(
            ServerUrl::parse("ftp://x"),
            Err(ServerUrlError::Scheme(s)) if s == "ftp"
        ));
    }
}

//! Kubernetes name rules, label sanitizing and the host names GitLab derives from images.

use std::sync::LazyLock;

use regex::Regex;

use crate::error::PodError;

const DNS1123_LABEL_RULE: &str =
    "a DNS-1123 label: at most 63 characters of [a-z0-9-], starting and ending alphanumeric";
const DNS1123_SUBDOMAIN_RULE: &str = "a DNS-1123 subdomain: at most 253 characters of [a-z0-9-.], \
     dot-separated parts starting and ending alphanumeric";
const QUALIFIED_NAME_RULE: &str = "a qualified name: an optional DNS-1123 subdomain prefix and \"/\", \
     then at most 63 characters of [A-Za-z0-9-_.] starting and ending alphanumeric";
const LABEL_VALUE_RULE: &str =
    "a label value: at most 63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric";

fn dns_part(part: &str) -> bool {
    let bytes = part.as_bytes();
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub(crate) fn is_dns1123_label(name: &str) -> bool {
    name.len() <= 63 && dns_part(name)
}

/// Dot-separated DNS-1123 parts, at most 253 characters.
pub(crate) fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(dns_part)
}

fn name_part(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

/// A label or annotation key: `[prefix/]name`.
pub(crate) fn is_qualified_name(key: &str) -> bool {
    match key.rsplit_once('/') {
        Some((prefix, name)) => is_dns1123_subdomain(prefix) && name_part(name),
        None => name_part(key),
    }
}

/// A label value (may be empty).
pub(crate) fn is_label_value(value: &str) -> bool {
    value.is_empty() || name_part(value)
}

pub(crate) fn check(
    valid: bool,
    what: impl Into<String>,
    value: &str,
    rule: &'static str,
) -> Result<(), PodError> {
    if valid {
        Ok(())
    } else {
        Err(PodError::InvalidName {
            what: what.into(),
            value: value.to_owned(),
            rule,
        })
    }
}

pub(crate) fn check_label(what: impl Into<String>, name: &str) -> Result<(), PodError> {
    check(is_dns1123_label(name), what, name, DNS1123_LABEL_RULE)
}

pub(crate) fn check_subdomain(what: impl Into<String>, name: &str) -> Result<(), PodError> {
    check(
        is_dns1123_subdomain(name),
        what,
        name,
        DNS1123_SUBDOMAIN_RULE,
    )
}

pub(crate) fn check_key(what: impl Into<String>, key: &str) -> Result<(), PodError> {
    check(is_qualified_name(key), what, key, QUALIFIED_NAME_RULE)
}

pub(crate) fn check_label_value(what: impl Into<String>, value: &str) -> Result<(), PodError> {
    check(is_label_value(value), what, value, LABEL_VALUE_RULE)
}

pub(crate) const SUBDOMAIN_RULE: &str = DNS1123_SUBDOMAIN_RULE;

/// GitLab Runner's `sanitizeLabel`: characters outside `[A-Za-z0-9-_.]` become `_`, leading and
/// trailing `-_.` are trimmed, the value is cut to 63 characters and trimmed again.
pub(crate) fn sanitize_label(value: &str) -> String {
    let mapped: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trim = |s: &str| s.trim_matches(['-', '_', '.']).to_owned();
    let trimmed = trim(&mapped);
    // Only ASCII is left, so byte slicing is safe.
    trim(&trimmed[..trimmed.len().min(63)])
}

/// Docker's reference grammar (`distribution/reference`): the name, the tag, the digest.
static REFERENCE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    let domain_component = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
    let domain = format!(r"{domain_component}(?:\.{domain_component})*(?::[0-9]+)?");
    let path_component = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*";
    let name = format!(r"(?:{domain}/)?{path_component}(?:/{path_component})*");
    let tag = r"[\w][\w.-]{0,127}";
    let digest = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
    Regex::new(&format!(r"^({name})(?::({tag}))?(?:@({digest}))?$")).ok()
});

/// The host names GitLab Runner derives from a service image (`SplitNameAndVersion`):
/// registry and path without port and tag, with `/` replaced by `__` and by `-`. Only the
/// ones that are valid DNS-1123 subdomains are returned (`redis:7` → `redis`,
/// `registry.example.com:5000/group/pg:15` → `registry.example.com-group-pg`).
pub(crate) fn image_host_names(image: &str) -> Vec<String> {
    let Some(reference) = REFERENCE.as_ref() else {
        return Vec::new();
    };
    let Some(captures) = reference.captures(image) else {
        return Vec::new();
    };
    let Some(name) = captures.get(1).map(|m| m.as_str()) else {
        return Vec::new();
    };
    // Strip a registry port: `host:5000/path` → `host/path`.
    let service = match name.split_once('/') {
        Some((first, rest)) => match first.split_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
                format!("{host}/{rest}")
            }
            _ => name.to_owned(),
        },
        None => name.to_owned(),
    };
    let mut names = vec![service.replace('/', "__")];
    let dashed = service.replace('/', "-");
    if dashed != names[0] {
        names.push(dashed);
    }
    names.retain(|n| is_dns1123_subdomain(n));
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert!(is_dns1123_label("svc-0"));
        assert!(!is_dns1123_label("Svc"));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(!is_dns1123_subdomain("a_b"));
    }

    #[test]
    fn qualified_names_and_values() {
        assert!(is_qualified_name("team"));
        assert!(is_qualified_name("example.com/owner"));
        assert!(is_qualified_name("app.kubernetes.io/name"));
        assert!(!is_qualified_name("Example.com/owner"));
        assert!(!is_qualified_name("a/b/c"));
        assert!(!is_qualified_name("/x"));
        assert!(!is_qualified_name("bad key"));
        assert!(is_label_value(""));
        assert!(is_label_value("v1.2_3"));
        assert!(!is_label_value("a b"));
    }

    #[test]
    fn label_sanitizing() {
        assert_eq!(sanitize_label("acme/widget"), "acme_widget");
        assert_eq!(sanitize_label("--My Project!--"), "My_Project");
        assert_eq!(
            sanitize_label(&format!("{}-x", "a".repeat(62))),
            "a".repeat(62)
        );
        assert_eq!(sanitize_label("ünï"), "n");
    }

    #[test]
    fn host_names_from_images() {
        assert_eq!(image_host_names("redis:7"), ["redis"]);
        assert_eq!(image_host_names("docker:dind"), ["docker"]);
        assert_eq!(image_host_names("postgres"), ["postgres"]);
        assert_eq!(
            image_host_names("tutum/wordpress:latest"),
            ["tutum-wordpress"]
        );
        assert_eq!(
            image_host_names("registry.example.com:5000/group/pg:15"),
            ["registry.example.com-group-pg"]
        );
        assert_eq!(
            image_host_names(
                "mysql@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
            ),
            ["mysql"]
        );
        assert!(image_host_names("Not/A/Valid:Ref:x").is_empty());
    }
}

//! Oar's own per-job identity keys of `[runners.kubernetes]`: `[[runners.kubernetes.identity]]`
//! rules, `[runners.kubernetes.id_token]` (how GitLab ID tokens are verified) and
//! `[runners.kubernetes.projected_token]` (a ServiceAccount token for cloud SDKs).
//!
//! Matching jobs against the rules is `oar-kube`'s (`oar_kube::identity`); this module only
//! checks the rules so that a broken one stops Oar at load time with its file and line.
//! Unknown keys inside these tables are errors, not warnings: a misspelt condition
//! (`protected_refs = true`) would otherwise silently widen a rule.

use serde::Deserialize;

use crate::path::KeyPath;
use crate::validate::{EnvVar, Issue, env_list, non_empty};

/// `git_info.ref_type` a rule may require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefType {
    /// `branch`.
    Branch,
    /// `tag`.
    Tag,
}

impl RefType {
    /// GitLab's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RefType::Branch => "branch",
            RefType::Tag => "tag",
        }
    }
}

/// One `[[runners.kubernetes.identity]]` rule: which jobs may run as `service_account`.
///
/// Every condition that is set must hold; conditions read GitLab's structured payload fields
/// (never job variables, which job authors control) and, with `require_id_token`, the claims
/// of the job's verified GitLab ID token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRule {
    /// The rule's place in the file: `runners[0].kubernetes.identity[1]`, for messages.
    pub path: KeyPath,
    /// `service_account` (required): the ServiceAccount matching jobs run as.
    pub service_account: String,
    /// `projects` (required, not empty): globs on `job_info.project_full_path`
    /// (`acme/platform/*`; `*` stays within one path component, `**` spans several).
    pub projects: Vec<String>,
    /// `refs`: globs on `git_info.ref`. Empty: any ref.
    pub refs: Vec<String>,
    /// `ref_type`: `branch` or `tag` only. Unset: either.
    pub ref_type: Option<RefType>,
    /// `protected_ref`: only protected branches and tags (`git_info.protected`). Default false.
    pub protected_ref: bool,
    /// `environments`: globs on the job's environment name, as proven by its ID token (so
    /// this needs `require_id_token`). Empty: any environment or none.
    pub environments: Vec<String>,
    /// `namespace`: the pod's namespace for matching jobs. Unset: as without the rule.
    pub namespace: Option<String>,
    /// `require_id_token`: the job variable holding a GitLab ID token (`id_tokens:` in the
    /// job) that must verify ([`IdTokenSettings`]) and agree with the payload.
    pub require_id_token: Option<String>,
    /// `environment`: `KEY=VALUE` entries set in the build container of matching jobs
    /// (`AWS_ROLE_ARN=...`), after those of [`ProjectedToken::environment`].
    pub environment: Vec<EnvVar>,
    /// `[runners.kubernetes.identity.projected_token]`: replaces the table-level one for
    /// matching jobs.
    pub projected_token: Option<ProjectedToken>,
}

/// `[runners.kubernetes.id_token]`: how the manager verifies GitLab ID tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdTokenSettings {
    /// `audience`: the `aud` the job's token must carry (`id_tokens: X: aud: ...`).
    /// Default `oar`.
    pub audience: String,
    /// `issuer`: the `iss` the token must carry. Default: the runner's `url` without a
    /// trailing `/` (GitLab's external URL).
    pub issuer: Option<String>,
    /// `jwks_url`: where the signing keys are. Default: `<url>/oauth/discovery/keys`.
    pub jwks_url: Option<String>,
}

impl Default for IdTokenSettings {
    fn default() -> Self {
        Self {
            audience: DEFAULT_ID_TOKEN_AUDIENCE.to_owned(),
            issuer: None,
            jwks_url: None,
        }
    }
}

/// The default of [`IdTokenSettings::audience`].
pub const DEFAULT_ID_TOKEN_AUDIENCE: &str = "oar";

/// `[runners.kubernetes.projected_token]`: a token of the pod's ServiceAccount with its own
/// audience, projected into the build container (for clouds without an identity webhook).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectedToken {
    /// `audience` (required): `sts.amazonaws.com`, `api://AzureADTokenExchange`, ...
    pub audience: String,
    /// `path` (required): the token file in the build container, absolute.
    pub path: String,
    /// `expiration_seconds`: the token's lifetime, renewed by the kubelet. Default: unset
    /// (Kubernetes' one hour); at least 600.
    pub expiration_seconds: Option<i64>,
    /// `environment`: `KEY=VALUE` entries set in the build container
    /// (`AWS_WEB_IDENTITY_TOKEN_FILE=<path>`).
    pub environment: Vec<EnvVar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct IdentityRuleWire {
    service_account: Option<String>,
    projects: Option<Vec<String>>,
    refs: Vec<String>,
    ref_type: Option<String>,
    protected_ref: Option<bool>,
    environments: Vec<String>,
    namespace: Option<String>,
    require_id_token: Option<String>,
    environment: Vec<String>,
    projected_token: Option<ProjectedTokenWire>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct IdTokenWire {
    audience: Option<String>,
    issuer: Option<String>,
    jwks_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ProjectedTokenWire {
    audience: Option<String>,
    path: Option<String>,
    expiration_seconds: Option<i64>,
    environment: Vec<String>,
}

/// Kubernetes' DNS-1123 subdomain (ServiceAccount names).
fn is_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// Kubernetes' DNS-1123 label (namespaces).
fn is_label(name: &str) -> bool {
    name.len() <= 63 && !name.contains('.') && is_subdomain(name)
}

/// A job variable name as GitLab allows it.
fn is_variable_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether a glob has the shape `oar_kube::glob` accepts: classes and braces closed, no
/// trailing `\`. (A malformed pattern would match nothing at run time.)
pub(crate) fn glob_problem(pattern: &str) -> Option<&'static str> {
    if pattern.is_empty() {
        return Some("an empty pattern matches nothing");
    }
    let bytes = pattern.as_bytes();
    let (mut i, mut braces, mut class) = (0, 0i32, false);
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if i + 1 == bytes.len() => return Some("it ends with a lone \\"),
            b'\\' => i += 1,
            b']' if class => class = false,
            _ if class => {}
            b'[' => {
                class = true;
                // `[]...]` and `[!]...]`: a leading `]` is a member.
                if matches!(bytes.get(i + 1), Some(b'!' | b'^')) {
                    i += 1;
                }
                if bytes.get(i + 1) == Some(&b']') {
                    i += 1;
                }
            }
            b'{' => braces += 1,
            b'}' if braces > 0 => braces -= 1,
            _ => {}
        }
        i += 1;
    }
    if class {
        Some("a [ is not closed")
    } else if braces > 0 {
        Some("a { is not closed")
    } else {
        None
    }
}

fn globs(path: &KeyPath, patterns: Vec<String>) -> Result<Vec<String>, Issue> {
    for (i, p) in patterns.iter().enumerate() {
        if let Some(problem) = glob_problem(p) {
            return Err(Issue::value(
                &path.index(i),
                format!("{p:?} is not a valid glob: {problem}"),
            ));
        }
    }
    Ok(patterns)
}

impl IdentityRule {
    pub(crate) fn from_wire(w: IdentityRuleWire, p: &KeyPath) -> Result<Self, Issue> {
        let service_account = non_empty(w.service_account)
            .ok_or_else(|| Issue::missing(&p.key("service_account")))?;
        if !is_subdomain(&service_account) {
            return Err(Issue::value(
                &p.key("service_account"),
                format!(
                    "{service_account:?} is not a ServiceAccount name (lower-case letters, \
                     digits, '-' and '.')"
                ),
            ));
        }
        let projects = w
            .projects
            .ok_or_else(|| Issue::missing(&p.key("projects")))?;
        if projects.is_empty() {
            return Err(Issue::value(
                &p.key("projects"),
                "a rule needs at least one project glob (\"**\" for every project, if that \
                 is really meant)",
            ));
        }
        let projects = globs(&p.key("projects"), projects)?;
        let refs = globs(&p.key("refs"), w.refs)?;
        let environments = globs(&p.key("environments"), w.environments)?;
        let ref_type = match w.ref_type.as_deref() {
            None => None,
            Some("branch") => Some(RefType::Branch),
            Some("tag") => Some(RefType::Tag),
            Some(other) => {
                return Err(Issue::value(
                    &p.key("ref_type"),
                    format!("expected one of branch, tag, found {other:?}"),
                ));
            }
        };
        let namespace = non_empty(w.namespace);
        if let Some(ns) = &namespace
            && !is_label(ns)
        {
            return Err(Issue::value(
                &p.key("namespace"),
                format!("{ns:?} is not a namespace name (lower-case letters, digits and '-')"),
            ));
        }
        let require_id_token = non_empty(w.require_id_token);
        if let Some(name) = &require_id_token
            && !is_variable_name(name)
        {
            return Err(Issue::value(
                &p.key("require_id_token"),
                format!("{name:?} is not a variable name (letters, digits and '_')"),
            ));
        }
        if !environments.is_empty() && require_id_token.is_none() {
            return Err(Issue::value(
                &p.key("environments"),
                "environments needs require_id_token: a job's environment is proven only by \
                 its GitLab ID token (job variables can be set by job authors)",
            ));
        }
        Ok(Self {
            path: p.clone(),
            service_account,
            projects,
            refs,
            ref_type,
            protected_ref: w.protected_ref.unwrap_or(false),
            environments,
            namespace,
            require_id_token,
            environment: env_list(&p.key("environment"), w.environment)?,
            projected_token: w
                .projected_token
                .map(|t| ProjectedToken::from_wire(t, &p.key("projected_token")))
                .transpose()?,
        })
    }
}

impl IdTokenSettings {
    pub(crate) fn from_wire(w: Option<IdTokenWire>, p: &KeyPath) -> Result<Self, Issue> {
        let w = w.unwrap_or_default();
        for (key, value) in [("issuer", &w.issuer), ("jwks_url", &w.jwks_url)] {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty())
                && ::url::Url::parse(v).is_err()
            {
                return Err(Issue::value(
                    &p.key(key),
                    format!("expected a URL such as \"https://gitlab.example.com\", found {v:?}"),
                ));
            }
        }
        Ok(Self {
            audience: non_empty(w.audience).unwrap_or_else(|| DEFAULT_ID_TOKEN_AUDIENCE.to_owned()),
            issuer: non_empty(w.issuer).map(|i| i.trim_end_matches('/').to_owned()),
            jwks_url: non_empty(w.jwks_url),
        })
    }
}

impl ProjectedToken {
    pub(crate) fn from_wire(w: ProjectedTokenWire, p: &KeyPath) -> Result<Self, Issue> {
        let audience = non_empty(w.audience).ok_or_else(|| Issue::missing(&p.key("audience")))?;
        let path = non_empty(w.path).ok_or_else(|| Issue::missing(&p.key("path")))?;
        let file = path.rsplit('/').next().unwrap_or_default();
        if !path.starts_with('/')
            || file.is_empty()
            || path.split('/').any(|c| c == ".." || c == ".")
            || path.rsplit_once('/').is_some_and(|(dir, _)| dir.is_empty())
        {
            return Err(Issue::value(
                &p.key("path"),
                format!(
                    "expected an absolute file path below a directory, such as \
                     \"/var/run/secrets/eks.amazonaws.com/serviceaccount/token\", found {path:?}"
                ),
            ));
        }
        if let Some(secs) = w.expiration_seconds
            && secs < 600
        {
            return Err(Issue::value(
                &p.key("expiration_seconds"),
                format!("Kubernetes needs at least 600 seconds, found {secs}"),
            ));
        }
        Ok(Self {
            audience,
            path,
            expiration_seconds: w.expiration_seconds,
            environment: env_list(&p.key("environment"), w.environment)?,
        })
    }

    /// The directory the token volume is mounted at.
    pub fn directory(&self) -> &str {
        self.path.rsplit_once('/').map_or("/", |(dir, _)| dir)
    }

    /// The token's file name inside [`Self::directory`].
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or_default()
    }
}

/// Checks that span rules: a rule's account must not be the runner's default one (jobs that
/// match no rule would run as it).
pub(crate) fn check_rules(
    rules: &[IdentityRule],
    default_account: Option<&str>,
) -> Result<(), Issue> {
    for rule in rules {
        if default_account == Some(rule.service_account.as_str()) {
            return Err(Issue::value(
                &rule.path.key("service_account"),
                format!(
                    "{:?} is also the runner's service_account: jobs that match no rule would \
                     run as it; give the rule an account of its own",
                    rule.service_account
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::glob_problem;

    #[test]
    fn glob_shapes() {
        for ok in [
            "acme/*", "v*", "{a,b}", "[a-z]*", r"a\*", "[]]", "[!]a]", "**",
        ] {
            assert_eq!(glob_problem(ok), None, "{ok}");
        }
        for bad in ["", "a[", "{a,b", r"a\", "[a-z"] {
            assert!(glob_problem(bad).is_some(), "{bad}");
        }
    }
}

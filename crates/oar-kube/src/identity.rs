//! Which ServiceAccount a job pod runs as: GitLab Runner's overwrite (unchanged), then Oar's
//! `[[runners.kubernetes.identity]]` rules. Pure: ID tokens arrive already verified.
//!
//! # The decision
//!
//! Rules are checked in order and the first that matches wins. An account named by some rule
//! is *guarded*.
//!
//! 1. A job asking for a guarded account (`KUBERNETES_SERVICE_ACCOUNT_OVERWRITE`) gets it only
//!    by matching a rule for that account (the first in order); otherwise it is refused,
//!    naming the first such rule and the condition that failed. The
//!    `service_account_overwrite_allowed` regex does not enter into it: the rule is the gate.
//! 2. A job asking for an account no rule guards gets GitLab Runner's behaviour exactly
//!    ([`crate::pod`]'s overwrites: the regex gate, ignored with a warning without one).
//! 3. Otherwise the first rule the job matches gives its account (and namespace, token and
//!    environment); no match: `service_account`, as without rules.
//!
//! # What a rule reads
//!
//! Only what GitLab vouches for: `job_info.project_full_path`, `git_info.ref`,
//! `git_info.ref_type`, `git_info.protected` ([`JobResponse::ref_protected`]; absent counts
//! as unprotected) and, for
//! `require_id_token` rules, the job's GitLab ID token, verified by the manager (signature,
//! issuer, audience, expiry, and its `job_id`, `project_path`, `ref`, `ref_protected` and
//! `environment` claims equal to the payload's). `environments` match the token's
//! `environment` claim. Job variables, which job authors set, are never read.

use std::collections::BTreeMap;
use std::fmt;

use oar_config::KubernetesConfig;
use oar_config::kubernetes::{IdentityRule, ProjectedToken};
use oar_gitlab::JobResponse;

use crate::glob;

/// The variable jobs ask for an account with.
pub const OVERWRITE_VARIABLE: &str = "KUBERNETES_SERVICE_ACCOUNT_OVERWRITE";

/// The outcome of verifying one ID token variable of the job.
#[derive(Clone, PartialEq, Eq)]
pub enum IdTokenCheck {
    /// The token verified and agrees with the payload.
    Verified {
        /// Its `environment` claim (`None` for a job without an environment).
        environment: Option<String>,
    },
    /// The token was refused; the reason names no secret.
    Refused(String),
}

impl fmt::Debug for IdTokenCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdTokenCheck::Verified { environment } => f
                .debug_struct("Verified")
                .field("environment", environment)
                .finish(),
            IdTokenCheck::Refused(reason) => f.debug_tuple("Refused").field(reason).finish(),
        }
    }
}

/// The verified ID tokens of a job, by variable name. A variable the job does not have is
/// absent.
pub type IdTokens = BTreeMap<String, IdTokenCheck>;

/// The variables whose ID tokens the manager must verify before [`decide`]: each
/// `require_id_token` of the rules, once.
pub fn id_token_variables(config: &KubernetesConfig) -> Vec<&str> {
    let mut names: Vec<&str> = config
        .identity
        .iter()
        .filter_map(|r| r.require_id_token.as_deref())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The job's environment name as the payload carries it (`CI_ENVIRONMENT_NAME`, the last
/// definition winning), which the ID token's `environment` claim must equal. Empty means none.
pub fn payload_environment(job: &JobResponse) -> Option<&str> {
    job.variables
        .iter()
        .rev()
        .find(|v| v.key == "CI_ENVIRONMENT_NAME")
        .map(|v| v.value.as_str())
        .filter(|v| !v.is_empty())
}

/// Which ServiceAccount and what goes with it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// The account (`None`: the namespace's default).
    pub service_account: Option<String>,
    /// The rule that gave it (its index), if any.
    pub rule: Option<usize>,
    /// The rule's namespace, which replaces the job's.
    pub namespace: Option<String>,
    /// The projected token for the build container: the rule's, else the table's.
    pub projected_token: Option<ProjectedToken>,
    /// `KEY=VALUE` pairs for the build container: the projected token's, then the rule's.
    pub environment: Vec<(String, String)>,
}

/// A job the rules refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{OVERWRITE_VARIABLE} {account:?} refused: the job does not match identity rule {rule_path} \
     ({condition}: {reason})"
)]
pub struct Refusal {
    /// The account asked for.
    pub account: String,
    /// The first rule guarding it (`runners[0].kubernetes.identity[1]`).
    pub rule_path: String,
    /// The rule's index.
    pub rule: usize,
    /// The condition that failed (`projects`, `refs`, `ref_type`, `protected_ref`,
    /// `require_id_token`, `environments`).
    pub condition: &'static str,
    /// Why, with the job's value (never a token).
    pub reason: String,
}

/// Why a rule does not match: the condition and the reason.
pub type Mismatch = (&'static str, String);

fn list(patterns: &[String]) -> String {
    format!("{patterns:?}")
}

/// Whether `job` matches `rule`; the first condition that fails otherwise.
pub fn matches(rule: &IdentityRule, job: &JobResponse, tokens: &IdTokens) -> Result<(), Mismatch> {
    let project = job.job_info.project_full_path.as_str();
    if project.is_empty() || !rule.projects.iter().any(|p| glob::matches(p, project)) {
        return Err((
            "projects",
            format!(
                "project {project:?} does not match {}",
                list(&rule.projects)
            ),
        ));
    }
    let git = &job.git_info;
    if let Some(want) = rule.ref_type
        && git.ref_type != want.as_str()
    {
        return Err((
            "ref_type",
            format!(
                "ref {:?} is a {}, not a {}",
                git.git_ref,
                if git.ref_type.is_empty() {
                    "ref of unknown type"
                } else {
                    git.ref_type.as_str()
                },
                want.as_str()
            ),
        ));
    }
    if !rule.refs.is_empty() && !rule.refs.iter().any(|r| glob::matches(r, &git.git_ref)) {
        return Err((
            "refs",
            format!("ref {:?} does not match {}", git.git_ref, list(&rule.refs)),
        ));
    }
    if rule.protected_ref && job.ref_protected != Some(true) {
        return Err((
            "protected_ref",
            format!("ref {:?} is not protected", git.git_ref),
        ));
    }
    let mut environment = None;
    if let Some(variable) = &rule.require_id_token {
        match tokens.get(variable) {
            None => {
                return Err((
                    "require_id_token",
                    format!(
                        "the job has no ID token {variable} (id_tokens: in its .gitlab-ci.yml)"
                    ),
                ));
            }
            Some(IdTokenCheck::Refused(reason)) => {
                return Err((
                    "require_id_token",
                    format!("ID token {variable} refused: {reason}"),
                ));
            }
            Some(IdTokenCheck::Verified { environment: env }) => environment = env.as_deref(),
        }
    }
    if !rule.environments.is_empty() {
        let Some(env) = environment else {
            return Err((
                "environments",
                format!(
                    "the job has no environment; {} wanted",
                    list(&rule.environments)
                ),
            ));
        };
        if !rule.environments.iter().any(|e| glob::matches(e, env)) {
            return Err((
                "environments",
                format!(
                    "environment {env:?} does not match {}",
                    list(&rule.environments)
                ),
            ));
        }
    }
    Ok(())
}

/// Whether some rule names `account`.
pub fn is_guarded(config: &KubernetesConfig, account: &str) -> bool {
    config.identity.iter().any(|r| r.service_account == account)
}

fn from_rule(config: &KubernetesConfig, index: usize, rule: &IdentityRule) -> Identity {
    let projected_token = rule
        .projected_token
        .clone()
        .or_else(|| config.projected_token.clone());
    let environment = projected_token
        .iter()
        .flat_map(|t| t.environment.iter())
        .chain(&rule.environment)
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect();
    Identity {
        service_account: Some(rule.service_account.clone()),
        rule: Some(index),
        namespace: rule.namespace.clone(),
        projected_token,
        environment,
    }
}

/// The identity when no rule decides: `account` (the upstream overwrite's result, or
/// `service_account`) with the table-level projected token.
pub fn without_rule(config: &KubernetesConfig, account: Option<String>) -> Identity {
    let projected_token = config.projected_token.clone();
    let environment = projected_token
        .iter()
        .flat_map(|t| t.environment.iter())
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect();
    Identity {
        service_account: account,
        rule: None,
        namespace: None,
        projected_token,
        environment,
    }
}

/// The decision for a job. `requested` is the job's non-empty
/// `KUBERNETES_SERVICE_ACCOUNT_OVERWRITE`, if it names a guarded account; `upstream` is the
/// account GitLab Runner's rules give otherwise (the overwrite when it is allowed, else
/// `service_account`), and `overwritten` says whether that came from the overwrite.
///
/// See the [module documentation](self).
pub fn decide(
    config: &KubernetesConfig,
    job: &JobResponse,
    tokens: &IdTokens,
    requested: Option<&str>,
    upstream: Option<String>,
    overwritten: bool,
) -> Result<Identity, Refusal> {
    if let Some(account) = requested.filter(|a| is_guarded(config, a)) {
        let mut first_refusal = None;
        for (i, rule) in config.identity.iter().enumerate() {
            if rule.service_account != account {
                continue;
            }
            match matches(rule, job, tokens) {
                Ok(()) => return Ok(from_rule(config, i, rule)),
                Err((condition, reason)) => {
                    first_refusal.get_or_insert(Refusal {
                        account: account.to_owned(),
                        rule_path: rule.path.to_string(),
                        rule: i,
                        condition,
                        reason,
                    });
                }
            }
        }
        if let Some(refusal) = first_refusal {
            return Err(refusal);
        }
    }
    if overwritten {
        return Ok(without_rule(config, upstream));
    }
    for (i, rule) in config.identity.iter().enumerate() {
        if matches(rule, job, tokens).is_ok() {
            return Ok(from_rule(config, i, rule));
        }
    }
    Ok(without_rule(config, upstream))
}

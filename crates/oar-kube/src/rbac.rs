//! The one list of Kubernetes API permissions the Oar manager uses.
//!
//! The manager creates a Pod and a Secret (the job payload, with the job's registry
//! credentials) per job, watches its pods through one watch per namespace, and deletes the pod
//! at the end; the Secret, owned by the pod, goes with it. It explains pods that do not start
//! from their status (container states, the scheduler's condition), not from events. It never
//! execs into, attaches to or reads logs of pods (the job drives itself inside the pod), so it
//! needs far less than GitLab Runner's Kubernetes executor: no `pods/exec`, `pods/attach`,
//! `pods/log`, `events`, `services`, `serviceaccounts`, `namespaces` or
//! `poddisruptionbudgets`.
//!
//! The Helm chart's Role must grant exactly [`RULES`]; its test compares against
//! [`rules_yaml`]. Change both together.

/// One RBAC policy rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// API groups (`""` is the core group).
    pub api_groups: &'static [&'static str],
    /// Resources.
    pub resources: &'static [&'static str],
    /// Verbs.
    pub verbs: &'static [&'static str],
}

/// Every permission the manager uses, in the job namespace(s).
///
/// - `pods`: `create` (the job pod), `get` (one pod, after a watch restart), `list` + `watch`
///   (the shared per-namespace watch, and finding the runner's pods after a manager restart),
///   `delete` (cleanup).
/// - `secrets`: `create` (payload and registry credentials, owned by the pod from the start, so
///   the garbage collector deletes it with the pod), `get` (the payload of a pod adopted after
///   a manager restart, to report its job should the pod end without reporting).
pub const RULES: &[Rule] = &[
    Rule {
        api_groups: &[""],
        resources: &["pods"],
        verbs: &["create", "get", "list", "watch", "delete"],
    },
    Rule {
        api_groups: &[""],
        resources: &["secrets"],
        verbs: &["create", "get"],
    },
];

fn flow_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// [`RULES`] as the `rules:` block of a Role (two-space indentation, flow-style lists, a
/// trailing newline):
///
/// ```yaml
/// rules:
///   - apiGroups: [""]
///     resources: ["pods"]
///     verbs: ["create", "get", "list", "watch", "delete"]
/// ```
pub fn rules_yaml() -> String {
    let mut out = String::from("rules:\n");
    for rule in RULES {
        out.push_str(&format!("  - apiGroups: {}\n", flow_list(rule.api_groups)));
        out.push_str(&format!("    resources: {}\n", flow_list(rule.resources)));
        out.push_str(&format!("    verbs: {}\n", flow_list(rule.verbs)));
    }
    out
}

/// A complete Role granting [`RULES`].
pub fn role_yaml(name: &str, namespace: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: {name}\n  namespace: {namespace}\n{}",
        rules_yaml()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_render() {
        assert_eq!(
            rules_yaml(),
            "rules:\n\
             \x20 - apiGroups: [\"\"]\n\
             \x20   resources: [\"pods\"]\n\
             \x20   verbs: [\"create\", \"get\", \"list\", \"watch\", \"delete\"]\n\
             \x20 - apiGroups: [\"\"]\n\
             \x20   resources: [\"secrets\"]\n\
             \x20   verbs: [\"create\", \"get\"]\n"
        );
        assert!(role_yaml("oar", "ci").starts_with(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: oar\n  namespace: ci\nrules:\n"
        ));
    }
}

//! Pod and container security contexts.

use serde::Deserialize;

use crate::locate::fold_key;
use crate::path::KeyPath;
use crate::validate::{Ctx, Issue, non_empty, non_negative};
use crate::warning::WarningKind;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PodSecurityContextWire {
    fs_group: Option<i64>,
    run_as_group: Option<i64>,
    run_as_non_root: Option<bool>,
    run_as_user: Option<i64>,
    supplemental_groups: Vec<i64>,
    selinux_type: Option<String>,
    seccomp_profile: Option<ProfileWire>,
    app_armor_profile: Option<ProfileWire>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ContainerSecurityContextWire {
    capabilities: Option<CapabilitiesWire>,
    privileged: Option<bool>,
    run_as_user: Option<i64>,
    run_as_group: Option<i64>,
    run_as_non_root: Option<bool>,
    read_only_root_filesystem: Option<bool>,
    allow_privilege_escalation: Option<bool>,
    selinux_type: Option<String>,
    proc_mount: Option<String>,
    seccomp_profile: Option<ProfileWire>,
    app_armor_profile: Option<ProfileWire>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CapabilitiesWire {
    add: Option<Vec<String>>,
    drop: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ProfileWire {
    #[serde(rename = "type")]
    kind: Option<String>,
    localhost_profile: Option<String>,
}

/// `pod_security_context`. `None` on the config when every field is unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSecurityContext {
    /// `fs_group`.
    pub fs_group: Option<i64>,
    /// `run_as_group`.
    pub run_as_group: Option<i64>,
    /// `run_as_non_root`.
    pub run_as_non_root: Option<bool>,
    /// `run_as_user`.
    pub run_as_user: Option<i64>,
    /// `supplemental_groups`.
    pub supplemental_groups: Vec<i64>,
    /// `selinux_type`: the SELinux type label.
    pub selinux_type: Option<String>,
    /// `seccomp_profile`.
    pub seccomp_profile: Option<Profile>,
    /// `app_armor_profile`.
    pub app_armor_profile: Option<Profile>,
}

/// `*_container_security_context`. `None` on the config when every field is unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSecurityContext {
    /// `capabilities.add`: when set, replaces the global `cap_add` for this container.
    pub capabilities_add: Option<Vec<String>>,
    /// `capabilities.drop`: when set, replaces the global `cap_drop` for this container.
    pub capabilities_drop: Option<Vec<String>>,
    /// `privileged`; unset falls back to the global `privileged`.
    pub privileged: Option<bool>,
    /// `run_as_user`.
    pub run_as_user: Option<i64>,
    /// `run_as_group`.
    pub run_as_group: Option<i64>,
    /// `run_as_non_root`.
    pub run_as_non_root: Option<bool>,
    /// `read_only_root_filesystem`.
    pub read_only_root_filesystem: Option<bool>,
    /// `allow_privilege_escalation`; unset falls back to the global setting.
    pub allow_privilege_escalation: Option<bool>,
    /// `selinux_type`.
    pub selinux_type: Option<String>,
    /// `proc_mount`.
    pub proc_mount: Option<ProcMount>,
    /// `seccomp_profile`.
    pub seccomp_profile: Option<Profile>,
    /// `app_armor_profile`.
    pub app_armor_profile: Option<Profile>,
}

/// `proc_mount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcMount {
    /// `default`.
    Default,
    /// `unmasked` (for building OCI images).
    Unmasked,
}

/// The `type` of a seccomp or AppArmor profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileType {
    /// `RuntimeDefault`.
    RuntimeDefault,
    /// `Unconfined`.
    Unconfined,
    /// `Localhost` (needs `localhost_profile`).
    Localhost,
}

/// `seccomp_profile` / `app_armor_profile`: `{type, localhost_profile}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// `type`.
    pub kind: ProfileType,
    /// `localhost_profile`; set exactly when the type is `Localhost`.
    pub localhost_profile: Option<String>,
}

fn id(path: &KeyPath, key: &str, value: Option<i64>) -> Result<Option<i64>, Issue> {
    non_negative::<i64>(&path.key(key), value)
}

/// Invalid profiles are dropped with a warning, as GitLab Runner logs and drops them.
fn profile(wire: Option<ProfileWire>, path: &KeyPath, ctx: &mut Ctx) -> Option<Profile> {
    let wire = wire?;
    let kind_text = non_empty(wire.kind)?;
    let localhost_profile = non_empty(wire.localhost_profile);
    let kind = match fold_key(&kind_text).as_str() {
        "runtimedefault" => ProfileType::RuntimeDefault,
        "unconfined" => ProfileType::Unconfined,
        "localhost" => ProfileType::Localhost,
        _ => {
            ctx.warn(
                &path.key("type"),
                WarningKind::IgnoredValue,
                format!(
                    "{path} ignored: type {kind_text:?} is not one of RuntimeDefault, \
                     Unconfined, Localhost"
                ),
            );
            return None;
        }
    };
    if kind == ProfileType::Localhost && localhost_profile.is_none() {
        ctx.warn(
            path,
            WarningKind::IgnoredValue,
            format!("{path} ignored: type Localhost needs localhost_profile"),
        );
        return None;
    }
    Some(Profile {
        kind,
        localhost_profile: localhost_profile.filter(|_| kind == ProfileType::Localhost),
    })
}

impl PodSecurityContext {
    pub(crate) fn from_wire(
        wire: Option<PodSecurityContextWire>,
        path: &KeyPath,
        ctx: &mut Ctx,
    ) -> Result<Option<Self>, Issue> {
        let Some(wire) = wire else { return Ok(None) };
        let context = Self {
            fs_group: id(path, "fs_group", wire.fs_group)?,
            run_as_group: id(path, "run_as_group", wire.run_as_group)?,
            run_as_non_root: wire.run_as_non_root,
            run_as_user: id(path, "run_as_user", wire.run_as_user)?,
            supplemental_groups: wire.supplemental_groups,
            selinux_type: non_empty(wire.selinux_type),
            seccomp_profile: profile(wire.seccomp_profile, &path.key("seccomp_profile"), ctx),
            app_armor_profile: profile(wire.app_armor_profile, &path.key("app_armor_profile"), ctx),
        };
        Ok((context != Self::default()).then_some(context))
    }
}

impl ContainerSecurityContext {
    pub(crate) fn from_wire(
        wire: Option<ContainerSecurityContextWire>,
        path: &KeyPath,
        ctx: &mut Ctx,
    ) -> Result<Option<Self>, Issue> {
        let Some(wire) = wire else { return Ok(None) };
        let proc_mount = match non_empty(wire.proc_mount) {
            None => None,
            Some(text) => match text.trim().to_ascii_lowercase().as_str() {
                "default" => Some(ProcMount::Default),
                "unmasked" => Some(ProcMount::Unmasked),
                _ => {
                    let key = path.key("proc_mount");
                    ctx.warn(
                        &key,
                        WarningKind::IgnoredValue,
                        format!("{key} {text:?} ignored: expected default or unmasked"),
                    );
                    None
                }
            },
        };
        let (capabilities_add, capabilities_drop) = wire
            .capabilities
            .map(|c| (c.add, c.drop))
            .unwrap_or_default();
        let context = Self {
            capabilities_add,
            capabilities_drop,
            privileged: wire.privileged,
            run_as_user: id(path, "run_as_user", wire.run_as_user)?,
            run_as_group: id(path, "run_as_group", wire.run_as_group)?,
            run_as_non_root: wire.run_as_non_root,
            read_only_root_filesystem: wire.read_only_root_filesystem,
            allow_privilege_escalation: wire.allow_privilege_escalation,
            selinux_type: non_empty(wire.selinux_type),
            proc_mount,
            seccomp_profile: profile(wire.seccomp_profile, &path.key("seccomp_profile"), ctx),
            app_armor_profile: profile(wire.app_armor_profile, &path.key("app_armor_profile"), ctx),
        };
        Ok((context != Self::default()).then_some(context))
    }
}

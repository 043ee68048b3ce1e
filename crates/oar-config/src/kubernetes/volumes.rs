//! `[runners.kubernetes.volumes]`: user volumes mounted into every container of the job pod.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::path::KeyPath;
use crate::quantity::Quantity;
use crate::validate::{Ctx, Issue, non_empty, one_of};
use crate::warning::WarningKind;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct VolumesWire {
    host_path: Vec<HostPathWire>,
    pvc: Vec<PvcWire>,
    config_map: Vec<ItemsWire>,
    secret: Vec<ItemsWire>,
    empty_dir: Vec<EmptyDirWire>,
    csi: Vec<CsiWire>,
    nfs: Vec<NfsWire>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct HostPathWire {
    name: Option<String>,
    mount_path: Option<String>,
    sub_path: Option<String>,
    read_only: Option<bool>,
    host_path: Option<String>,
    mount_propagation: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PvcWire {
    name: Option<String>,
    mount_path: Option<String>,
    sub_path: Option<String>,
    read_only: Option<bool>,
    mount_propagation: Option<String>,
}

/// `config_map` and `secret` have the same keys.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ItemsWire {
    name: Option<String>,
    mount_path: Option<String>,
    sub_path: Option<String>,
    read_only: Option<bool>,
    items: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EmptyDirWire {
    name: Option<String>,
    mount_path: Option<String>,
    sub_path: Option<String>,
    medium: Option<String>,
    size_limit: Option<String>,
    mount_propagation: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CsiWire {
    name: Option<String>,
    mount_path: Option<String>,
    sub_path: Option<String>,
    driver: Option<String>,
    fs_type: Option<String>,
    read_only: Option<bool>,
    volume_attributes: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NfsWire {
    name: Option<String>,
    mount_path: Option<String>,
    sub_path: Option<String>,
    server: Option<String>,
    path: Option<String>,
    read_only: Option<bool>,
}

/// `mount_propagation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountPropagation {
    /// `None`.
    None,
    /// `HostToContainer`.
    HostToContainer,
    /// `Bidirectional`.
    Bidirectional,
}

/// The mount part shared by every volume type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    /// `name`: the volume name (and, for pvc/secret/config_map, the object's name; variables
    /// are expanded for pvc). Required.
    pub name: String,
    /// `mount_path`. Required.
    pub mount_path: String,
    /// `sub_path`. Default: the volume root.
    pub sub_path: Option<String>,
    /// `read_only`. Default `false`.
    pub read_only: bool,
    /// `mount_propagation` (host_path, pvc, empty_dir). Default: Kubernetes' default.
    pub mount_propagation: Option<MountPropagation>,
}

/// `[[runners.kubernetes.volumes.host_path]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPathVolume {
    /// The mount.
    pub mount: VolumeMount,
    /// `host_path`. Default: the same as `mount_path`.
    pub host_path: Option<String>,
}

/// `[[runners.kubernetes.volumes.pvc]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvcVolume {
    /// The mount; `name` is also the claim name.
    pub mount: VolumeMount,
}

/// `[[runners.kubernetes.volumes.config_map]]` and `[[...secret]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemsVolume {
    /// The mount; `name` is also the ConfigMap or Secret name.
    pub mount: VolumeMount,
    /// `items`: key → path. Default: every key.
    pub items: BTreeMap<String, String>,
}

/// `[[runners.kubernetes.volumes.empty_dir]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmptyDirVolume {
    /// The mount.
    pub mount: VolumeMount,
    /// `medium`: `Memory` for tmpfs. Default: node disk.
    pub medium: Option<String>,
    /// `size_limit`. An invalid value is ignored with a warning, as upstream does.
    pub size_limit: Option<Quantity>,
}

/// `[[runners.kubernetes.volumes.csi]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsiVolume {
    /// The mount.
    pub mount: VolumeMount,
    /// `driver`. Required.
    pub driver: String,
    /// `fs_type`. Default: the driver's.
    pub fs_type: Option<String>,
    /// `volume_attributes`.
    pub volume_attributes: BTreeMap<String, String>,
}

/// `[[runners.kubernetes.volumes.nfs]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsVolume {
    /// The mount.
    pub mount: VolumeMount,
    /// `server`. Required.
    pub server: String,
    /// `path` on the server. Required.
    pub path: String,
}

/// All user volumes, in GitLab Runner's mount order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Volumes {
    /// `host_path`.
    pub host_path: Vec<HostPathVolume>,
    /// `secret`.
    pub secret: Vec<ItemsVolume>,
    /// `pvc`.
    pub pvc: Vec<PvcVolume>,
    /// `config_map`.
    pub config_map: Vec<ItemsVolume>,
    /// `empty_dir`.
    pub empty_dir: Vec<EmptyDirVolume>,
    /// `csi`.
    pub csi: Vec<CsiVolume>,
    /// `nfs`.
    pub nfs: Vec<NfsVolume>,
}

impl Volumes {
    /// Every volume's mount, in mount order.
    pub fn mounts(&self) -> impl Iterator<Item = &VolumeMount> {
        let Volumes {
            host_path,
            secret,
            pvc,
            config_map,
            empty_dir,
            csi,
            nfs,
        } = self;
        host_path
            .iter()
            .map(|v| &v.mount)
            .chain(secret.iter().map(|v| &v.mount))
            .chain(pvc.iter().map(|v| &v.mount))
            .chain(config_map.iter().map(|v| &v.mount))
            .chain(empty_dir.iter().map(|v| &v.mount))
            .chain(csi.iter().map(|v| &v.mount))
            .chain(nfs.iter().map(|v| &v.mount))
    }

    pub(crate) fn from_wire(
        wire: Option<VolumesWire>,
        path: &KeyPath,
        ctx: &mut Ctx,
    ) -> Result<Self, Issue> {
        let wire = wire.unwrap_or_default();
        let each = |key: &str, i: usize| path.key(key).index(i);
        let mut volumes = Volumes::default();
        for (i, v) in wire.host_path.into_iter().enumerate() {
            let p = each("host_path", i);
            volumes.host_path.push(HostPathVolume {
                mount: mount(
                    &p,
                    v.name,
                    v.mount_path,
                    v.sub_path,
                    v.read_only,
                    v.mount_propagation,
                )?,
                host_path: non_empty(v.host_path),
            });
        }
        for (i, v) in wire.secret.into_iter().enumerate() {
            volumes.secret.push(items(&each("secret", i), v)?);
        }
        for (i, v) in wire.pvc.into_iter().enumerate() {
            let p = each("pvc", i);
            volumes.pvc.push(PvcVolume {
                mount: mount(
                    &p,
                    v.name,
                    v.mount_path,
                    v.sub_path,
                    v.read_only,
                    v.mount_propagation,
                )?,
            });
        }
        for (i, v) in wire.config_map.into_iter().enumerate() {
            volumes.config_map.push(items(&each("config_map", i), v)?);
        }
        for (i, v) in wire.empty_dir.into_iter().enumerate() {
            let p = each("empty_dir", i);
            let size_limit = non_empty(v.size_limit).and_then(|text| {
                let q = Quantity::new(&text);
                if q.is_none() {
                    let key = p.key("size_limit");
                    ctx.warn(
                        &key,
                        WarningKind::IgnoredValue,
                        format!("{key} {text:?} ignored: not a Kubernetes quantity"),
                    );
                }
                q
            });
            volumes.empty_dir.push(EmptyDirVolume {
                mount: mount(
                    &p,
                    v.name,
                    v.mount_path,
                    v.sub_path,
                    None,
                    v.mount_propagation,
                )?,
                medium: non_empty(v.medium),
                size_limit,
            });
        }
        for (i, v) in wire.csi.into_iter().enumerate() {
            let p = each("csi", i);
            volumes.csi.push(CsiVolume {
                mount: mount(&p, v.name, v.mount_path, v.sub_path, v.read_only, None)?,
                driver: required(&p, "driver", v.driver)?,
                fs_type: non_empty(v.fs_type),
                volume_attributes: v.volume_attributes,
            });
        }
        for (i, v) in wire.nfs.into_iter().enumerate() {
            let p = each("nfs", i);
            volumes.nfs.push(NfsVolume {
                mount: mount(&p, v.name, v.mount_path, v.sub_path, v.read_only, None)?,
                server: required(&p, "server", v.server)?,
                path: required(&p, "path", v.path)?,
            });
        }
        Ok(volumes)
    }
}

fn required(path: &KeyPath, key: &str, value: Option<String>) -> Result<String, Issue> {
    non_empty(value).ok_or_else(|| Issue::missing(&path.key(key)))
}

fn items(path: &KeyPath, v: ItemsWire) -> Result<ItemsVolume, Issue> {
    Ok(ItemsVolume {
        mount: mount(path, v.name, v.mount_path, v.sub_path, v.read_only, None)?,
        items: v.items,
    })
}

fn mount(
    path: &KeyPath,
    name: Option<String>,
    mount_path: Option<String>,
    sub_path: Option<String>,
    read_only: Option<bool>,
    propagation: Option<String>,
) -> Result<VolumeMount, Issue> {
    Ok(VolumeMount {
        name: required(path, "name", name)?,
        mount_path: required(path, "mount_path", mount_path)?,
        sub_path: non_empty(sub_path),
        read_only: read_only.unwrap_or(false),
        mount_propagation: one_of(
            &path.key("mount_propagation"),
            propagation.as_deref(),
            &[
                ("None", MountPropagation::None),
                ("HostToContainer", MountPropagation::HostToContainer),
                ("Bidirectional", MountPropagation::Bidirectional),
            ],
            true,
        )?,
    })
}

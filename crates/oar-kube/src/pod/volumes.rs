//! `[runners.kubernetes.volumes]`: user volumes and their mounts, in GitLab Runner's order
//! (host_path, secret, pvc, config_map, empty_dir, csi, nfs).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use oar_config::kubernetes::{ItemsVolume, MountPropagation, VolumeMount, Volumes};
use oar_job::vars::Variables;

use crate::error::PodError;

/// The user volumes and the mounts every container gets.
pub(crate) struct UserVolumes {
    pub volumes: Vec<core::Volume>,
    pub mounts: Vec<core::VolumeMount>,
}

fn propagation(p: Option<MountPropagation>) -> Option<String> {
    p.map(|p| {
        match p {
            MountPropagation::None => "None",
            MountPropagation::HostToContainer => "HostToContainer",
            MountPropagation::Bidirectional => "Bidirectional",
        }
        .to_owned()
    })
}

/// The mount of `m`: `mount_path` and `sub_path` are variable-expanded, as are pvc names.
fn mount(m: &VolumeMount, name: String, vars: &Variables, read_only: bool) -> core::VolumeMount {
    core::VolumeMount {
        name,
        mount_path: vars.expand(&m.mount_path),
        sub_path: m
            .sub_path
            .as_deref()
            .map(|s| vars.expand(s))
            .filter(|s| !s.is_empty()),
        read_only: read_only.then_some(true),
        mount_propagation: propagation(m.mount_propagation),
        ..Default::default()
    }
}

fn items(v: &ItemsVolume) -> Option<Vec<core::KeyToPath>> {
    (!v.items.is_empty()).then(|| {
        v.items
            .iter()
            .map(|(key, path)| core::KeyToPath {
                key: key.clone(),
                path: path.clone(),
                mode: None,
            })
            .collect()
    })
}

fn volume(name: String) -> core::Volume {
    core::Volume {
        name,
        ..Default::default()
    }
}

pub(crate) fn user_volumes(
    config: &Volumes,
    vars: &Variables,
    reserved: &[&str],
) -> Result<UserVolumes, PodError> {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for v in &config.host_path {
        let m = &v.mount;
        volumes.push(core::Volume {
            host_path: Some(core::HostPathVolumeSource {
                path: v.host_path.clone().unwrap_or_else(|| m.mount_path.clone()),
                type_: None,
            }),
            ..volume(m.name.clone())
        });
        mounts.push(mount(m, m.name.clone(), vars, m.read_only));
    }
    for v in &config.secret {
        let m = &v.mount;
        volumes.push(core::Volume {
            secret: Some(core::SecretVolumeSource {
                secret_name: Some(m.name.clone()),
                items: items(v),
                ..Default::default()
            }),
            ..volume(m.name.clone())
        });
        mounts.push(mount(m, m.name.clone(), vars, m.read_only));
    }
    // PVC names are expanded (`build-pvc-$CI_CONCURRENT_ID`); the same name twice is one
    // volume mounted twice.
    let mut pvcs = BTreeSet::new();
    for v in &config.pvc {
        let m = &v.mount;
        let name = vars.expand(&m.name);
        if pvcs.insert(m.name.clone()) {
            volumes.push(core::Volume {
                persistent_volume_claim: Some(core::PersistentVolumeClaimVolumeSource {
                    claim_name: name.clone(),
                    read_only: None,
                }),
                ..volume(name.clone())
            });
        }
        mounts.push(mount(m, name, vars, m.read_only));
    }
    for v in &config.config_map {
        let m = &v.mount;
        volumes.push(core::Volume {
            config_map: Some(core::ConfigMapVolumeSource {
                name: m.name.clone(),
                items: items(v),
                ..Default::default()
            }),
            ..volume(m.name.clone())
        });
        mounts.push(mount(m, m.name.clone(), vars, m.read_only));
    }
    for v in &config.empty_dir {
        let m = &v.mount;
        volumes.push(core::Volume {
            empty_dir: Some(core::EmptyDirVolumeSource {
                medium: v.medium.clone(),
                size_limit: v
                    .size_limit
                    .as_ref()
                    .map(|q| Quantity(q.as_str().to_owned())),
            }),
            ..volume(m.name.clone())
        });
        mounts.push(mount(m, m.name.clone(), vars, false));
    }
    for v in &config.csi {
        let m = &v.mount;
        volumes.push(core::Volume {
            csi: Some(core::CSIVolumeSource {
                driver: v.driver.clone(),
                fs_type: v.fs_type.clone(),
                read_only: Some(m.read_only),
                volume_attributes: (!v.volume_attributes.is_empty())
                    .then(|| v.volume_attributes.clone()),
                node_publish_secret_ref: None,
            }),
            ..volume(m.name.clone())
        });
        mounts.push(mount(m, m.name.clone(), vars, m.read_only));
    }
    for v in &config.nfs {
        let m = &v.mount;
        volumes.push(core::Volume {
            nfs: Some(core::NFSVolumeSource {
                path: v.path.clone(),
                server: v.server.clone(),
                read_only: m.read_only.then_some(true),
            }),
            ..volume(m.name.clone())
        });
        mounts.push(mount(m, m.name.clone(), vars, m.read_only));
    }
    for v in &volumes {
        if reserved.contains(&v.name.as_str()) {
            return Err(PodError::ReservedVolumeName {
                name: v.name.clone(),
            });
        }
    }
    Ok(UserVolumes { volumes, mounts })
}

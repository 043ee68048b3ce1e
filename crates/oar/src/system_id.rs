//! The runner manager's system id (`s_…` from the machine id, else `r_…` random), kept in
//! `.runner_system_id` next to `config.toml`.

use anyhow::Context;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use std::path::Path;

fn valid(id: &str) -> bool {
    id.len() == 14
        && (id.starts_with("s_") || id.starts_with("r_"))
        && id[2..].bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Derives the id from a machine id.
pub fn from_machine_id(machine_id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(machine_id.trim().as_bytes())
        .unwrap_or_else(|_| Hmac::<Sha256>::new_from_slice(b"oar").expect("static key"));
    mac.update(b"gitlab-runner");
    let digest = hex::encode(mac.finalize().into_bytes());
    format!("s_{}", &digest[..12])
}

fn random_id() -> String {
    const CHARS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::rng();
    let s: String = (0..12)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect();
    format!("r_{s}")
}

/// Reads the stored id, or makes one and stores it beside `config`.
pub fn load_or_create(config: &Path) -> anyhow::Result<String> {
    let path = config
        .parent()
        .unwrap_or(Path::new("."))
        .join(".runner_system_id");
    if let Ok(existing) = fs_err::read_to_string(&path) {
        let id = existing.trim().to_string();
        if valid(&id) {
            return Ok(id);
        }
        tracing::warn!(path = %path.display(), "ignoring an invalid stored system id");
    }
    let id = ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| {
            fs_err::read_to_string(p)
                .ok()
                .filter(|s| !s.trim().is_empty())
        })
        .map(|m| from_machine_id(&m))
        .unwrap_or_else(random_id);
    if let Some(dir) = path.parent() {
        fs_err::create_dir_all(dir).ok();
    }
    oar_config::write_secret_file(&path, id.as_bytes())
        .with_context(|| format!("cannot store the system id in {}", path.display()))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_gitlab_shape() {
        let s = from_machine_id("0123456789abcdef0123456789abcdef\n");
        assert!(valid(&s), "{s}");
        assert_eq!(s, from_machine_id("0123456789abcdef0123456789abcdef"));
        assert!(valid(&random_id()));
        assert!(!valid("x_123"));
    }

    #[test]
    fn stored_id_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.toml");
        let a = load_or_create(&cfg).unwrap();
        let b = load_or_create(&cfg).unwrap();
        assert_eq!(a, b);
    }
}

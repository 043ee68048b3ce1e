//! Atomic, private file writes.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::ConfigError;

/// Writes `contents` to `path` with mode 0600 (owner read/write only), atomically: a temporary
/// file in the same directory is written, synced and renamed over `path`. Readers see the old
/// or the new contents, never a partial file. Used for `config.toml` and for token files.
///
/// Missing parent directories are created (mode 0700 on Unix). When `path` is a symlink, its
/// target is replaced and the link is kept.
pub fn write_secret_file(path: &Path, contents: impl AsRef<[u8]>) -> Result<(), ConfigError> {
    let target = resolve_symlink(path);
    write_atomic(&target, contents.as_ref()).map_err(|source| ConfigError::Write {
        path: path.to_owned(),
        source,
    })
}

fn resolve_symlink(path: &Path) -> PathBuf {
    match fs_err::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            fs_err::canonicalize(path).unwrap_or_else(|_| path.to_owned())
        }
        _ => path.to_owned(),
    }
}

fn write_atomic(target: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    create_private_dir(dir)?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o600));
    }
    let mut file = builder.tempfile_in(dir)?;
    file.write_all(contents)?;
    file.flush()?;
    file.as_file().sync_all()?;
    file.persist(target).map_err(|e| e.error)?;
    // Make the rename durable; not every platform can sync a directory.
    if let Ok(dir) = fs_err::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs_err::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn writes_private_files_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/token");
        write_secret_file(&path, "glrt-secret").unwrap();
        assert_eq!(fs_err::read_to_string(&path).unwrap(), "glrt-secret");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);

        // An existing, more open file ends up 0600 too.
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_secret_file(&path, "new").unwrap();
        assert_eq!(fs_err::read_to_string(&path).unwrap(), "new");
        assert_eq!(mode(&path), 0o600);
        // No temporary files are left behind.
        let entries = fs_err::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(entries, 1);
    }

    #[test]
    fn keeps_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.toml");
        let link = dir.path().join("config.toml");
        fs_err::write(&real, "old").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_secret_file(&link, "new").unwrap();
        assert!(
            fs_err::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs_err::read_to_string(&real).unwrap(), "new");
    }
}

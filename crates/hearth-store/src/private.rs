//! A household's history is theirs: a node's data directory is `0700` and every file in it
//! `0600`, whatever the umask (other users of a shared laptop read nothing).

use std::io;
use std::path::Path;

/// Creates `dir` (and its parents) and makes `dir` itself `0700`.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    set_mode(dir, 0o700)
}

/// Makes `dir` and every directory under it `0700`, every file `0600` (symbolic links are
/// left alone). Run at start, so a data directory made by an older version is tightened.
pub fn tighten(dir: &Path) -> io::Result<()> {
    set_mode(dir, 0o700)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            tighten(&entry.path())?;
        } else if kind.is_file() {
            set_mode(&entry.path(), 0o600)?;
        }
    }
    Ok(())
}

/// Options that create a file `0600`.
pub fn options() -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if current != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn tighten_makes_everything_private() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("data");
        std::fs::create_dir_all(d.join("state")).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(d.join("state").join("db"), b"x").unwrap();
        std::fs::set_permissions(
            d.join("state").join("db"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        tighten(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&d.join("state")), 0o700);
        assert_eq!(mode(&d.join("state").join("db")), 0o600);
        let f = d.join("new");
        options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&f)
            .unwrap();
        assert_eq!(mode(&f), 0o600);
    }
}

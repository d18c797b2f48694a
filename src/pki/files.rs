//! Writing the PKI's files safely: never through a symbolic link, each file replaced whole
//! (a new temporary file, then a rename), keys with mode 0600.

use super::*;

/// Paths of `<stem>.pem` and `<stem>.key` in `dir`.
pub(super) fn issued_paths(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    )
}

/// Writes `<stem>.pem` and `<stem>.key` into `dir`, checking both targets before writing
/// either, so a refused key leaves no new certificate behind.
pub(super) fn write_issued(
    dir: &Path,
    stem: &str,
    issued: &Issued,
) -> Result<(PathBuf, PathBuf), PkiError> {
    let (cert_path, key_path) = issued_paths(dir, stem);
    refuse_unsafe_target(&cert_path)?;
    refuse_unsafe_target(&key_path)?;
    write_file(&cert_path, &issued.cert_pem, PUBLIC_FILE_MODE)?;
    write_file(&key_path, &issued.key_pem, PRIVATE_KEY_MODE)?;
    Ok((cert_path, key_path))
}

/// Refuses a target that is a symbolic link (whose target an attacker chose) or anything but
/// a regular file; a missing one is fine.
pub(super) fn refuse_unsafe_target(path: &Path) -> Result<(), PkiError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(PkiError::Symlink(path.to_owned())),
        Ok(meta) if !meta.is_file() => Err(PkiError::NotAFile(path.to_owned())),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(PkiError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `contents` to `path` with `mode` without ever following a symbolic link: a target
/// that is one is refused; the data goes to a new file in the same directory (created with
/// `O_CREAT | O_EXCL`, which fails on an existing name, link or not) with its final mode from
/// the start, which then replaces `path` by `rename` (which replaces a name, never writes
/// through one). Readers see the old file or the new one, never a partial one.
pub(super) fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    refuse_unsafe_target(path)?;
    let write_error = |source| PkiError::Write {
        path: path.to_owned(),
        source,
    };
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(PkiError::NotAFile(path.to_owned()));
    };
    let temporary = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    // Left over from an interrupted run; `remove_file` removes a link, not its target.
    match fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(write_error(source)),
    }
    let written = replace_with_new_file(&temporary, path, contents, mode);
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written.map_err(write_error)
}

/// Creates `temporary` (which must not exist), fills it and renames it to `path`.
fn replace_with_new_file(
    temporary: &Path,
    path: &Path,
    contents: &str,
    mode: u32,
) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(temporary)?;
    // The umask may have narrowed the mode; make it exactly `mode`.
    file.set_permissions(Permissions::from_mode(mode))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    fs::rename(temporary, path)?;
    // Makes the rename itself durable.
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => fs::File::open(dir)?.sync_all(),
        _ => fs::File::open(".")?.sync_all(),
    }
}

//! Profile files (`--cpuprofile`, `--memprofile`) written whole or not at all.
//!
//! A profile is written at exit, after a run that may have lasted days, so two things matter:
//!
//! - **The path is checked at start, without touching what is there.** The directory must exist
//!   and take a new file (a file is created in it and removed again), the path must not be a
//!   directory or a device, and an existing profile stays as it is until the new one is
//!   complete: a bad flag, a taken port or a crash never leaves an empty file behind.
//! - **The file is replaced in one step.** The profile goes to a temporary file in the same
//!   directory (`.NAME.XXXXXX.tmp`), which is flushed to disk and then renamed over `NAME`, so
//!   a full disk, a removed directory or `kill -9` mid-write leaves the old file or the whole
//!   new one, never a truncated one. Only a process killed during the write leaves the
//!   temporary file behind.
//!
//! The `tempfile` crate makes and cleans up the temporary file; the rest is `std`.

use std::ffi::OsString;
use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Where a profile will be written, checked at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfilePath {
    /// As the user wrote it, for messages.
    given: PathBuf,
    /// The directory, with symbolic links resolved: the temporary file must be made there for
    /// the rename to be atomic, and two flags naming the same file are told apart by it.
    dir: PathBuf,
    /// The file's name in `dir` (the target's, when the path is a symbolic link to a file).
    name: OsString,
}

impl ProfilePath {
    /// Checks that a profile can be written to `value` later, leaving any existing file as it
    /// is. The error says what is wrong and what is expected (clap adds the flag and value).
    pub fn check(value: &str) -> Result<ProfilePath, String> {
        if value.is_empty() {
            return Err("expected the path of a file to write, e.g. cpu.pb.gz".into());
        }
        // `--cpuprofile --memprofile x` or `--cpuprofile -x`: most likely a flag where the path
        // was forgotten. A file whose name starts with '-' is still reachable as ./-x.
        if value.starts_with('-') {
            return Err(format!(
                "needs the path of a file to write, e.g. cpu.pb.gz; {value:?} looks like a flag \
                 (for a file of that name, write ./{value})"
            ));
        }
        let given = PathBuf::from(value);
        // A link to a profile keeps working: the file it points to is the one replaced.
        let path = match fs::symlink_metadata(&given) {
            Ok(meta) if meta.file_type().is_symlink() => fs::canonicalize(&given)
                .map_err(|e| format!("is a symbolic link that cannot be followed ({e})"))?,
            _ => given.clone(),
        };
        let Some(name) = file_name(&path) else {
            return Err(
                "names a directory; expected a file path such as profiles/cpu.pb.gz".into(),
            );
        };
        match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                return Err(
                    "is a directory; expected a file path such as profiles/cpu.pb.gz".into(),
                );
            }
            Ok(meta) if !meta.is_file() => {
                return Err(
                    "is not a regular file (a device, pipe or socket); a profile is written to a \
                     new or existing regular file"
                        .into(),
                );
            }
            _ => {}
        }
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let dir = fs::canonicalize(parent).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => format!(
                "the directory {} does not exist; create it first",
                parent.display()
            ),
            _ => format!("cannot use the directory {}: {e}", parent.display()),
        })?;
        if !dir.is_dir() {
            return Err(format!("{} is not a directory", parent.display()));
        }
        // The write at exit makes a new file here and renames it; prove now that it can.
        temp_file(&dir, &name, None).map_err(|e| {
            format!(
                "cannot create files in {} ({}); the profile is written there at exit",
                dir.display(),
                os_error(&e)
            )
        })?;
        Ok(ProfilePath { given, dir, name })
    }

    /// The path as given on the command line.
    pub fn given(&self) -> &Path {
        &self.given
    }

    /// Whether two paths name the same file (`./a`, `x/../a` and a link to `a` do).
    pub fn same_file(&self, other: &ProfilePath) -> bool {
        self.dir == other.dir && self.name == other.name
    }

    /// Replaces the file with `contents` in one step: a temporary file in the same directory,
    /// flushed to disk, renamed over the target; then the directory is flushed, so the rename
    /// itself survives a crash. On error the old file, if any, is untouched.
    pub fn write(&self, contents: &[u8]) -> io::Result<()> {
        let target = self.dir.join(&self.name);
        // A replaced profile keeps its permissions; a new one gets the usual 0666 & umask.
        let keep = fs::metadata(&target)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.permissions());
        let mut temp = temp_file(&self.dir, &self.name, keep)
            .map_err(|e| io::Error::new(e.kind(), os_error(&e)))?;
        temp.write_all(contents)?;
        temp.as_file().sync_all()?;
        // Dropping a temporary file that could not be renamed deletes it.
        temp.persist(&target).map_err(|e| e.error)?;
        File::open(&self.dir)?.sync_all()
    }
}

/// The operating system's words for an error, without the temporary file's name that
/// `tempfile` adds (the user never chose it).
fn os_error(err: &io::Error) -> String {
    if let Some(code) = err.raw_os_error() {
        return io::Error::from_raw_os_error(code).to_string();
    }
    // tempfile wraps the OS error in its PathError, whose text is `ERROR at path "..."` and
    // which does not give the OS error back: keep the words before the path.
    let text = err.to_string();
    match text.rsplit_once(" at path \"") {
        Some((words, _)) => words.to_owned(),
        None => text,
    }
}

/// The last component of `path`, unless the path ends in `..`, `.` or a separator.
fn file_name(path: &Path) -> Option<OsString> {
    let text = path.as_os_str().to_string_lossy();
    if text.ends_with(std::path::MAIN_SEPARATOR) || text.ends_with("/.") || text == "." {
        return None;
    }
    path.file_name().map(OsString::from)
}

/// A new, empty file `.NAME.XXXXXX.tmp` in `dir`, deleted when dropped unless persisted.
fn temp_file(
    dir: &Path,
    name: &OsString,
    permissions: Option<Permissions>,
) -> io::Result<tempfile::NamedTempFile> {
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // What File::create would give; the process's umask applies.
        builder.permissions(Permissions::from_mode(0o666));
    }
    let temp = builder.tempfile_in(dir)?;
    if let Some(permissions) = permissions {
        temp.as_file().set_permissions(permissions)?;
    }
    Ok(temp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("profile-file-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn checking_leaves_an_existing_file_and_the_directory_as_they_were() {
        let dir = scratch("check");
        let file = dir.join("old.pb.gz");
        fs::write(&file, b"old profile").unwrap();
        ProfilePath::check(file.to_str().unwrap()).unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"old profile");
        assert_eq!(entries(&dir), ["old.pb.gz"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn writing_replaces_the_file_and_leaves_no_temporary_file() {
        let dir = scratch("write");
        let file = dir.join("p.pb.gz");
        fs::write(&file, b"old").unwrap();
        let target = ProfilePath::check(file.to_str().unwrap()).unwrap();
        target.write(b"new profile").unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"new profile");
        assert_eq!(entries(&dir), ["p.pb.gz"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = scratch("fail");
        let sub = dir.join("sub");
        fs::create_dir(&sub).unwrap();
        let target = ProfilePath::check(sub.join("p.pb.gz").to_str().unwrap()).unwrap();
        fs::remove_dir(&sub).unwrap();
        let err = target.write(b"lost").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rejects_directories_devices_missing_parents_and_read_only_places() {
        let dir = scratch("reject");
        let cases = [
            (dir.to_str().unwrap().to_owned(), "is a directory"),
            (format!("{}/", dir.display()), "names a directory"),
            ("/dev/null".to_owned(), "not a regular file"),
            (
                dir.join("missing/p.pb.gz").to_str().unwrap().to_owned(),
                "does not exist",
            ),
            ("/proc/version".to_owned(), "cannot create files in /proc"),
            (String::new(), "expected the path of a file"),
        ];
        for (value, expected) in cases {
            let err = ProfilePath::check(&value).unwrap_err();
            assert!(err.contains(expected), "{value:?}: {err}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn different_spellings_of_one_file_are_the_same_file() {
        let dir = scratch("same");
        fs::create_dir(dir.join("sub")).unwrap();
        let a = ProfilePath::check(dir.join("p.pb.gz").to_str().unwrap()).unwrap();
        let b = ProfilePath::check(dir.join("sub/../p.pb.gz").to_str().unwrap()).unwrap();
        let c = ProfilePath::check(dir.join("q.pb.gz").to_str().unwrap()).unwrap();
        assert!(a.same_file(&b));
        assert!(!a.same_file(&c));
        #[cfg(unix)]
        {
            fs::write(dir.join("p.pb.gz"), b"x").unwrap();
            std::os::unix::fs::symlink(dir.join("p.pb.gz"), dir.join("link")).unwrap();
            let link = ProfilePath::check(dir.join("link").to_str().unwrap()).unwrap();
            assert!(a.same_file(&link));
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}

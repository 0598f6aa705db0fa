//! `hostDisk` volumes: who may use them and where.
//!
//! A host disk is a file on the node that QEMU (root) opens read-write, so it is refused
//! unless the cluster configuration allows it: KubeVirt's `HostDisk` feature gate in
//! `feature-gates` of the `kubevirt-config` ConfigMap, and Ferrovirt's list of allowed
//! directories in [`PREFIXES_KEY`] (none by default). [`HostDiskPolicy::confine`] is pure:
//! it normalises the path (`.`, `..`, `//`) and requires it under an allowed directory.
//! [`open_confined`] is the node side: it walks the path from the allowed directory one
//! component at a time without following any symbolic link, creating what `DiskOrCreate`
//! needs, and requires a regular file at the end.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::{Error, Result};

/// KubeVirt's feature gate for `hostDisk` volumes.
pub const FEATURE_GATE: &str = "HostDisk";
/// The `kubevirt-config` key that lists the directories host disks may live under
/// (comma-separated absolute paths). Ferrovirt's own key.
pub const PREFIXES_KEY: &str = "ferrovirt.hostDiskPathPrefixes";

/// An allowed directory: as configured, and as the node resolves it (symbolic links in the
/// configured path itself are the administrator's and are resolved once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefix {
    pub configured: PathBuf,
    pub host: PathBuf,
}

/// Whether `hostDisk` volumes are allowed, and under which directories.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostDiskPolicy {
    /// The `HostDisk` feature gate is on.
    pub enabled: bool,
    pub prefixes: Vec<Prefix>,
}

impl HostDiskPolicy {
    /// The gate on, with these directories (taken as the node's paths).
    pub fn allow(prefixes: &[&str]) -> Self {
        HostDiskPolicy {
            enabled: true,
            prefixes: prefixes
                .iter()
                .map(|p| Prefix {
                    configured: normalise(Path::new(p)),
                    host: normalise(Path::new(p)),
                })
                .collect(),
        }
    }

    /// From the gate and the configured list (comma-separated; relative entries are
    /// ignored with a warning: they could mean anything).
    pub fn from_config(enabled: bool, prefixes: Option<&str>) -> Self {
        let prefixes = prefixes
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .filter(|p| {
                let absolute = p.starts_with('/');
                if !absolute {
                    tracing::warn!(prefix = %p, key = PREFIXES_KEY, "ignoring a relative host disk directory");
                }
                absolute
            })
            .map(|p| {
                let configured = normalise(Path::new(p));
                Prefix {
                    host: configured.clone(),
                    configured,
                }
            })
            .collect();
        HostDiskPolicy { enabled, prefixes }
    }

    /// Resolves each directory's own symbolic links on this node (a directory that does
    /// not exist stays as configured; opening a disk under it then fails saying so).
    pub fn resolve_on_node(mut self) -> Self {
        for p in &mut self.prefixes {
            if let Ok(real) = std::fs::canonicalize(&p.configured) {
                p.host = real;
            }
        }
        self
    }

    /// The node path of the host disk of volume `index`, normalised and under an allowed
    /// directory, with that directory; errors name the field.
    pub fn confine(&self, index: usize, path: &str) -> Result<(PathBuf, PathBuf)> {
        if !self.enabled {
            return Err(Error::unsupported(
                format!("spec.volumes[{index}].hostDisk"),
                format!(
                    "the {FEATURE_GATE} feature gate is not enabled: an administrator adds \
                     {FEATURE_GATE} to feature-gates in the kubevirt-config ConfigMap to allow \
                     host disks"
                ),
            ));
        }
        let field = format!("spec.volumes[{index}].hostDisk.path");
        if !path.starts_with('/') {
            return Err(Error::unsupported(
                field,
                format!("{path:?} is not an absolute path"),
            ));
        }
        let wanted = normalise(Path::new(path));
        if self.prefixes.is_empty() {
            return Err(Error::unsupported(
                field,
                format!(
                    "{path:?} is not allowed: no directory is allowed for host disks; an \
                     administrator lists them in {PREFIXES_KEY} of the kubevirt-config ConfigMap"
                ),
            ));
        }
        for p in &self.prefixes {
            for base in [&p.configured, &p.host] {
                if let Ok(rest) = wanted.strip_prefix(base)
                    && rest.components().next().is_some()
                {
                    return Ok((p.host.join(rest), p.host.clone()));
                }
            }
        }
        let allowed: Vec<String> = self
            .prefixes
            .iter()
            .map(|p| p.configured.display().to_string())
            .collect();
        Err(Error::unsupported(
            field,
            format!(
                "{path:?} (normalised: {}) is not under a directory allowed for host disks ({}; \
                 {PREFIXES_KEY} in the kubevirt-config ConfigMap)",
                wanted.display(),
                allowed.join(", ")
            ),
        ))
    }
}

/// `.` and empty components dropped, `..` taken back lexically (never above `/`).
pub fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// What [`open_confined`] found: the file's device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// Opens `path` (from [`HostDiskPolicy::confine`], or a claim's disk image) below `prefix`
/// without following any symbolic link, creating missing directories and a sparse file of
/// `create` bytes when asked (`DiskOrCreate`), and gives it to the launcher's user. The
/// file must be a regular file. `field` is named when the path is refused, `volume` when
/// the file is missing (`missing` says why it was not made).
pub fn open_confined(
    field: &str,
    volume: &str,
    prefix: &Path,
    path: &Path,
    (create, missing): (Option<u64>, &str),
    (uid, gid): (u32, u32),
) -> Result<FileId> {
    let refuse = |m: String| Error::unsupported(field.to_owned(), m);
    let (dir, file) = walk(prefix, path, create.is_some(), &refuse)?;
    let c = cstring(&file)?;
    let fd = match openat(&dir, &c, libc::O_PATH | libc::O_NOFOLLOW, 0) {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match create {
            None => {
                return Err(Error::volume(
                    volume,
                    format!("{} does not exist ({missing})", path.display()),
                ));
            }
            Some(capacity) => {
                let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
                let fd = openat(&dir, &c, flags, 0o644).map_err(Error::io("creating", path))?;
                let f = std::fs::File::from(fd);
                f.set_len(capacity).map_err(Error::io("sizing", path))?;
                tracing::info!(path = %path.display(), capacity, "disk image created");
                OwnedFd::from(f)
            }
        },
        Err(e) => return Err(explain(&dir, &c, path, e, &refuse)),
    };
    let st = fstat(&fd).map_err(Error::io("inspecting", path))?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => {
            // QEMU opens it as the launcher's user, as KubeVirt gives a non-root VMI's
            // host disks to the qemu user.
            give_fd(&fd, &st, (uid, gid), path)?;
            Ok(FileId {
                dev: st.st_dev,
                ino: st.st_ino,
            })
        }
        libc::S_IFLNK => Err(refuse(format!(
            "{} is a symbolic link; host disk paths may not follow symbolic links",
            path.display()
        ))),
        _ => Err(refuse(format!("{} is not a regular file", path.display()))),
    }
}

/// Walks from `prefix` to the directory holding `path`'s last component, one component at
/// a time without following a symbolic link (creating missing directories with `create`):
/// that directory and the last component's name.
fn walk(
    prefix: &Path,
    path: &Path,
    create: bool,
    refuse: &dyn Fn(String) -> Error,
) -> Result<(OwnedFd, std::ffi::OsString)> {
    let rest = path.strip_prefix(prefix).map_err(|_| {
        refuse(format!(
            "{} is not under {}",
            path.display(),
            prefix.display()
        ))
    })?;
    let names: Vec<&std::ffi::OsStr> = rest
        .components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(refuse(format!("{} is not normalised", path.display()))),
        })
        .collect::<Result<_>>()?;
    let (file, dirs) = names
        .split_last()
        .ok_or_else(|| refuse(format!("{} names a directory", path.display())))?;

    let mut dir = open_path(prefix, libc::O_PATH | libc::O_DIRECTORY).map_err(|e| {
        refuse(format!(
            "the allowed directory {} cannot be opened ({e}): an administrator creates it",
            prefix.display()
        ))
    })?;
    let mut walked = prefix.to_path_buf();
    for name in dirs {
        walked.push(name);
        let c = cstring(name)?;
        let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        dir = match openat(&dir, &c, flags, 0) {
            Ok(fd) => fd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                // SAFETY: dir is an open directory fd, c a valid C string.
                let rc = unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755) };
                if rc != 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::AlreadyExists {
                        return Err(Error::io("creating", &walked)(e));
                    }
                }
                openat(&dir, &c, flags, 0).map_err(|e| explain(&dir, &c, &walked, e, &refuse))?
            }
            Err(e) => return Err(explain(&dir, &c, &walked, e, &refuse)),
        };
    }
    Ok((dir, file.to_os_string()))
}

/// Gives the file open at `fd` (whose status is `st`) to the launcher's user.
fn give_fd(fd: &OwnedFd, st: &libc::stat, (uid, gid): (u32, u32), path: &Path) -> Result<()> {
    if (st.st_uid, st.st_gid) == (uid, gid) {
        return Ok(());
    }
    // SAFETY: fd is an open (O_PATH) fd; the empty path means the fd itself.
    let rc = unsafe { libc::fchownat(fd.as_raw_fd(), c"".as_ptr(), uid, gid, libc::AT_EMPTY_PATH) };
    if rc != 0 {
        return Err(Error::io("giving to the launcher's user", path)(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Linux's `BLKGETSIZE64`: a block device's size in bytes.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;

/// Opens the block device `path` below `prefix` as [`open_confined`] opens a file (no
/// symbolic link followed on the way or at the end), requires a block device (`field` is
/// named otherwise, `volume` when it is missing), gives it to the launcher's user and
/// tells its size in bytes. Nothing is made.
pub fn open_device_confined(
    field: &str,
    volume: &str,
    prefix: &Path,
    path: &Path,
    owner: (u32, u32),
) -> Result<(FileId, u64)> {
    let refuse = |m: String| Error::unsupported(field.to_owned(), m);
    let (dir, file) = walk(prefix, path, false, &refuse)?;
    let c = cstring(&file)?;
    let fd = match openat(&dir, &c, libc::O_PATH | libc::O_NOFOLLOW, 0) {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::volume(
                volume,
                format!("{} does not exist", path.display()),
            ));
        }
        Err(e) => return Err(explain(&dir, &c, path, e, &refuse)),
    };
    let st = fstat(&fd).map_err(Error::io("inspecting", path))?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFBLK => {
            give_fd(&fd, &st, owner, path)?;
            // The device itself, opened again through the descriptor that was checked.
            let dev = std::fs::File::open(super::launcher_root::fd_path(&fd))
                .map_err(Error::io("opening", path))?;
            let mut size: u64 = 0;
            // SAFETY: BLKGETSIZE64 writes one u64 to the pointer; dev is an open device.
            if unsafe { libc::ioctl(dev.as_raw_fd(), BLKGETSIZE64, &mut size) } != 0 {
                return Err(Error::io("sizing", path)(std::io::Error::last_os_error()));
            }
            Ok((
                FileId {
                    dev: st.st_dev,
                    ino: st.st_ino,
                },
                size,
            ))
        }
        libc::S_IFLNK => Err(refuse(format!(
            "{} is a symbolic link; a claim's device may not be a symbolic link",
            path.display()
        ))),
        _ => Err(refuse(format!("{} is not a block device", path.display()))),
    }
}

/// The error for a component that would not open: a symbolic link is named as such.
fn explain(
    dir: &OwnedFd,
    name: &CString,
    walked: &Path,
    e: std::io::Error,
    refuse: &dyn Fn(String) -> Error,
) -> Error {
    let is_link = fstatat_nofollow(dir, name)
        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
        .unwrap_or(false);
    if is_link {
        refuse(format!(
            "{} is a symbolic link; host disk paths may not follow symbolic links",
            walked.display()
        ))
    } else if e.raw_os_error() == Some(libc::ENOTDIR) {
        refuse(format!("{} is not a directory", walked.display()))
    } else {
        Error::io("opening", walked)(e)
    }
}

fn cstring(name: &std::ffi::OsStr) -> Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| Error::unsupported("spec.volumes[].hostDisk.path", "contains a NUL byte"))
}

fn open_path(path: &Path, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: c is a valid C string; the returned fd is owned below.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn openat(
    dir: &OwnedFd,
    name: &CString,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> std::io::Result<OwnedFd> {
    // SAFETY: dir is open, name a valid C string; the returned fd is owned below.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: &OwnedFd) -> std::io::Result<libc::stat> {
    // SAFETY: a zeroed stat is a valid out-parameter; fd is open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

fn fstatat_nofollow(dir: &OwnedFd, name: &CString) -> std::io::Result<libc::stat> {
    // SAFETY: as in fstat; name is a valid C string.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

/// The device and inode at `path` now, without following a final symbolic link: the
/// handler compares it after QEMU opened the file with what it checked.
pub fn file_id(path: &Path) -> std::io::Result<FileId> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path)?;
    Ok(FileId {
        dev: m.dev(),
        ino: m.ino(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const ROOT: (u32, u32) = (0, 0);

    #[test]
    fn refused_without_the_gate_or_a_directory_and_confined_to_directories() {
        let err = HostDiskPolicy::default()
            .confine(0, "/etc/shadow")
            .unwrap_err();
        assert_eq!(err.reason(), "UnsupportedSpec");
        let msg = err.to_string();
        assert!(
            msg.starts_with("spec.volumes[0].hostDisk:") && msg.contains("feature-gates"),
            "{msg}"
        );

        let none = HostDiskPolicy::from_config(true, None);
        let msg = none.confine(1, "/var/data/d.img").unwrap_err().to_string();
        assert!(
            msg.starts_with("spec.volumes[1].hostDisk.path:") && msg.contains(PREFIXES_KEY),
            "{msg}"
        );

        let p = HostDiskPolicy::from_config(true, Some(" /var/data/ , relative,/srv//vm"));
        assert_eq!(p.prefixes.len(), 2);
        assert_eq!(
            p.confine(0, "/var/data/./a/../disk.img").unwrap(),
            (
                PathBuf::from("/var/data/disk.img"),
                PathBuf::from("/var/data")
            )
        );
        assert_eq!(
            p.confine(0, "/srv/vm/x/y.img").unwrap().0,
            Path::new("/srv/vm/x/y.img")
        );
        for bad in [
            "/var/data/../../tmp/x.img",
            "/etc/shadow",
            "/var/data",
            "/var/database/x.img",
            "/var/data/..",
        ] {
            let msg = p.confine(2, bad).unwrap_err().to_string();
            assert!(
                msg.starts_with("spec.volumes[2].hostDisk.path:") && msg.contains(PREFIXES_KEY),
                "{bad}: {msg}"
            );
        }
        assert!(
            p.confine(2, "/var/data/../../tmp/x.img")
                .unwrap_err()
                .to_string()
                .contains("normalised: /tmp/x.img")
        );
    }

    #[test]
    fn opens_creates_and_never_follows_a_symbolic_link() {
        const F0: &str = "spec.volumes[0].hostDisk.path";
        const F1: &str = "spec.volumes[1].hostDisk.path";
        const F3: &str = "spec.volumes[3].hostDisk.path";
        const DISK: &str = "type Disk";
        let tmp = tempfile::tempdir().unwrap();
        let prefix = tmp.path().join("allowed");
        std::fs::create_dir(&prefix).unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(&outside, prefix.join("dirlink")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), prefix.join("filelink")).unwrap();

        // DiskOrCreate: directories and a sparse file.
        let made = prefix.join("a/b/d.img");
        open_confined(F0, "hd", &prefix, &made, (Some(4096), DISK), ROOT).unwrap();
        assert_eq!(std::fs::metadata(&made).unwrap().len(), 4096);
        // Given to the launcher's user, whom QEMU runs as.
        open_confined(F0, "hd", &prefix, &made, (None, DISK), (107, 107)).unwrap();
        let m = std::fs::metadata(&made).unwrap();
        assert_eq!((m.uid(), m.gid()), (107, 107));
        // Existing file, type Disk; its identity is what file_id reports.
        let id = open_confined(F0, "hd", &prefix, &made, (None, DISK), ROOT).unwrap();
        assert_eq!(file_id(&made).unwrap(), id);

        for link in [prefix.join("filelink"), prefix.join("dirlink/secret")] {
            for create in [None, Some(4096)] {
                let msg = open_confined(F3, "hd", &prefix, &link, (create, DISK), ROOT)
                    .unwrap_err()
                    .to_string();
                assert!(
                    msg.starts_with("spec.volumes[3].hostDisk.path:")
                        && msg.contains("symbolic link"),
                    "{}: {msg}",
                    link.display()
                );
            }
        }
        // Nothing was created through the directory link.
        let created_outside = open_confined(
            F0,
            "hd",
            &prefix,
            &prefix.join("dirlink/new.img"),
            (Some(1), DISK),
            ROOT,
        );
        assert!(created_outside.is_err());
        assert!(!outside.join("new.img").exists());

        let missing = open_confined(
            F1,
            "hd",
            &prefix,
            &prefix.join("nope.img"),
            (None, DISK),
            ROOT,
        )
        .unwrap_err();
        assert!(missing.to_string().contains("does not exist"), "{missing}");
        let dir =
            open_confined(F1, "hd", &prefix, &prefix.join("a"), (None, DISK), ROOT).unwrap_err();
        assert!(dir.to_string().contains("not a regular file"), "{dir}");
        let gone = open_confined(
            F1,
            "hd",
            &tmp.path().join("absent"),
            &tmp.path().join("absent/x"),
            (None, DISK),
            ROOT,
        )
        .unwrap_err();
        assert!(
            gone.to_string().contains("administrator creates it"),
            "{gone}"
        );
    }
}

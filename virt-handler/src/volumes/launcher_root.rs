//! Reading files of the launcher pod (its Secret, ConfigMap, downwardAPI and
//! ServiceAccount volumes) through the launcher's `/proc/<pid>/root`, never leaving that
//! tree: every path resolves with it as `/` (`openat2` with `RESOLVE_IN_ROOT`), so the
//! links the node lays out in such volumes (`key -> ..data/key`) are followed and a link
//! to anything outside lands inside the launcher's tree instead.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};

/// The most a Secret or ConfigMap can hold (the API server's limit on an object, 1 MiB):
/// more read from a mount is refused rather than written into a disk.
pub const SECRET_MAX_BYTES: u64 = 1 << 20;
/// How deep a volume's directories may nest (a downwardAPI `path` may hold `/`).
const MAX_DEPTH: usize = 8;

/// Opens `path` for reading, resolved with `root` as `/` (symbolic links and `..` never
/// leave it; no `/proc` magic links).
pub fn open_in_root(root: &File, path: &str) -> std::io::Result<File> {
    let c = std::ffi::CString::new(path.trim_start_matches('/'))
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_how is plain data; zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 with a valid directory fd, a NUL-terminated path and its open_how.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openat2 returned a new file descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd as i32) })
}

/// Opens `path` inside the tree of the launcher whose root is `launcher_root` (its
/// `/proc/<pid>/root`), as [`open_in_root`] does.
pub fn open_in_launcher(launcher_root: &Path, path: &str) -> std::io::Result<File> {
    open_in_root(&File::open(launcher_root)?, path)
}

/// The path that reaches an open descriptor again, `/proc/self/fd/<fd>`: for a directory,
/// its entries are one name below it, wherever the directory is (no path resolved again).
pub fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The files under `dir` as a Kubernetes volume projects them, with their paths relative
/// to `dir`: the keys (and, for a downwardAPI `path` with `/`, the directories holding
/// them), without the node's own `..data` and `..<timestamp>` entries. At most
/// `max_bytes` in all. Errors are the words for the VMI (which path, what is wrong).
pub fn read_tree(root: &File, dir: &str, max_bytes: u64) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut total = 0;
    walk(root, dir, "", 0, max_bytes, &mut total, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(
    root: &File,
    dir: &str,
    rel: &str,
    depth: usize,
    max_bytes: u64,
    total: &mut u64,
    out: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), String> {
    let here = if rel.is_empty() {
        dir.to_owned()
    } else {
        format!("{dir}/{rel}")
    };
    if depth > MAX_DEPTH {
        return Err(format!("{here} nests deeper than {MAX_DEPTH} directories"));
    }
    let d = open_in_root(root, &here).map_err(|e| format!("{here} in the launcher pod: {e}"))?;
    // The directory's own entries, read through its descriptor (not its path again).
    let entries = std::fs::read_dir(fd_path(&d))
        .map_err(|e| format!("listing {here} in the launcher pod: {e}"))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("listing {here} in the launcher pod: {e}"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") {
            continue;
        }
        let rel_name = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let path = format!("{dir}/{rel_name}");
        let f =
            open_in_root(root, &path).map_err(|e| format!("{path} in the launcher pod: {e}"))?;
        let meta = f.metadata().map_err(|e| format!("{path}: {e}"))?;
        if meta.is_dir() {
            walk(root, dir, &rel_name, depth + 1, max_bytes, total, out)?;
            continue;
        }
        if !meta.is_file() {
            return Err(format!("{path} is not a file in the launcher pod"));
        }
        let mut data = Vec::new();
        let left = max_bytes - *total;
        f.take(left + 1)
            .read_to_end(&mut data)
            .map_err(|e| format!("reading {path}: {e}"))?;
        *total += data.len() as u64;
        if *total > max_bytes {
            return Err(format!("{dir} holds more than {max_bytes} bytes"));
        }
        out.push((rel_name, data));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A volume as the node lays it out (kubelet's atomic writer): each top-level entry a
    /// link into `..data`, itself a link to the timestamped directory.
    fn volume(root: &std::path::Path, dir: &str, files: &[(&str, &[u8])]) {
        let dir = root.join(dir.trim_start_matches('/'));
        let version = dir.join("..2026_12_03_07_00_00.1");
        std::fs::create_dir_all(&version).unwrap();
        std::os::unix::fs::symlink("..2026_12_03_07_00_00.1", dir.join("..data")).unwrap();
        for (path, data) in files {
            let target = version.join(path);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(&target, data).unwrap();
            let top = path.split('/').next().unwrap();
            if !dir.join(top).exists() {
                std::os::unix::fs::symlink(format!("..data/{top}"), dir.join(top)).unwrap();
            }
        }
    }

    #[test]
    fn reads_the_keys_of_a_projected_volume_and_nothing_of_the_node() {
        let tree = tempfile::tempdir().unwrap();
        volume(
            tree.path(),
            "/v/cm",
            &[
                ("b", b"two"),
                ("a.conf", b"one\n"),
                ("sub/labels", b"x=\"y\""),
            ],
        );
        let root = File::open(tree.path()).unwrap();
        let files = read_tree(&root, "/v/cm", 1 << 20).unwrap();
        assert_eq!(
            files,
            [
                ("a.conf".to_owned(), b"one\n".to_vec()),
                ("b".to_owned(), b"two".to_vec()),
                ("sub/labels".to_owned(), b"x=\"y\"".to_vec()),
            ]
        );
        let err = read_tree(&root, "/v/cm", 8).unwrap_err();
        assert!(err.contains("more than 8 bytes"), "{err}");
        let err = read_tree(&root, "/v/none", 8).unwrap_err();
        assert!(err.contains("/v/none in the launcher pod"), "{err}");
    }

    #[test]
    fn a_key_linking_out_of_the_launchers_tree_reads_inside_it() {
        let tree = tempfile::tempdir().unwrap();
        volume(tree.path(), "/v/s", &[]);
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(outside.path(), b"host secret").unwrap();
        let dir = tree.path().join("v/s");
        std::os::unix::fs::symlink(outside.path(), dir.join("stolen")).unwrap();
        let root = File::open(tree.path()).unwrap();
        let err = read_tree(&root, "/v/s", 1 << 20).unwrap_err();
        assert!(err.contains("/v/s/stolen in the launcher pod"), "{err}");
        // The same path inside the tree is what is read.
        let inside = tree.path().join(outside.path().strip_prefix("/").unwrap());
        std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
        std::fs::write(&inside, b"launcher's own").unwrap();
        let files = read_tree(&root, "/v/s", 1 << 20).unwrap();
        assert_eq!(files, [("stolen".to_owned(), b"launcher's own".to_vec())]);
    }
}

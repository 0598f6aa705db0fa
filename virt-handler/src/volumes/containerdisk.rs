//! containerDisk and kernel-boot images, read through the launcher pod (docs/contracts.md,
//! "The launcher pod"): each image is a container of the pod (`volume<name>`,
//! `kernel-boot`) whose process listens on `<vmi-dir>/container-disks/<container>.sock`.
//! Connecting to that socket gives the process's pid (SO_PEERCRED, in this handler's PID
//! namespace); `/proc/<pid>/root` is the image's file tree. The launcher and QEMU share the
//! pod's PID namespace, where the same process has another pid (the last `NSpid` entry of
//! `/proc/<pid>/status`): they open the image's files as `/proc/<that pid>/root/<path>`.
//! Blocking: run in `spawn_blocking`.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use crds::VirtualMachineInstanceSpec;
use ferrovirt_node_contract::paths::VmiDir;
use ferrovirt_node_contract::pod::{KERNEL_BOOT_CONTAINER, volume_container};

use crate::{Error, Result};

/// A disk container's file tree: as this handler reads it, and as the launcher and QEMU
/// open it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRoot {
    pub image: String,
    pub container: String,
    /// `/proc/<pid>/root` with the pid in this handler's PID namespace.
    pub host: PathBuf,
    /// `/proc/<pid>/root` with the pid in the pod's PID namespace.
    pub launcher: PathBuf,
}

impl ImageRoot {
    /// A file named by an absolute path in the image: (as read here, as QEMU opens it).
    pub fn file(&self, path_in_image: &str) -> (PathBuf, PathBuf) {
        let rel = path_in_image.trim_start_matches('/');
        (self.host.join(rel), self.launcher.join(rel))
    }
}

/// The image roots of a VMI's disk containers, by container name.
pub type ImageRoots = BTreeMap<String, ImageRoot>;

/// The containers a VMI's spec gives its launcher pod, with their images.
pub fn containers(spec: &VirtualMachineInstanceSpec) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = spec
        .volumes
        .iter()
        .filter_map(|v| {
            let cd = v.container_disk.as_ref()?;
            Some((volume_container(&v.name), cd.image.clone()))
        })
        .collect();
    if let Some(k) = spec.kernel_boot_container() {
        out.push((KERNEL_BOOT_CONTAINER.to_owned(), k.image.clone()));
    }
    out
}

/// Finds every disk container of the VMI whose per-VMI directory on this host is `dir`,
/// waiting up to `wait` for each socket to answer (the pod's containers start together).
pub fn locate_all(
    spec: &VirtualMachineInstanceSpec,
    dir: &VmiDir,
    wait: Duration,
) -> Result<ImageRoots> {
    let mut out = ImageRoots::new();
    for (container, image) in containers(spec) {
        let socket = dir.container_disk_socket(&container);
        let started = Instant::now();
        let pid = loop {
            match peer_pid(&socket) {
                Ok(pid) => break pid,
                Err(e) if started.elapsed() >= wait => {
                    return Err(Error::ImageNotFound {
                        image,
                        container,
                        message: format!("{}: {e}", socket.display()),
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let in_pod = pid_in_own_namespace(pid)?;
        tracing::debug!(%container, %image, pid, in_pod, "found the disk container");
        out.insert(
            container.clone(),
            ImageRoot {
                image,
                container,
                host: PathBuf::from(format!("/proc/{pid}/root")),
                launcher: PathBuf::from(format!("/proc/{in_pod}/root")),
            },
        );
    }
    Ok(out)
}

/// The images of `spec` as directories of an image store on this host (`store`, laid out
/// as [`ferrovirt_node_contract::imagestore`] says), read and opened in place: for a
/// launcher run on the host, without a pod (tests).
pub fn from_store(spec: &VirtualMachineInstanceSpec, store: &Path) -> ImageRoots {
    containers(spec)
        .into_iter()
        .map(|(container, image)| {
            let dir = store.join(ferrovirt_node_contract::imagestore::dir_name(&image));
            let root = ImageRoot {
                image,
                container: container.clone(),
                host: dir.clone(),
                launcher: dir,
            };
            (container, root)
        })
        .collect()
}

/// The pid (in this process's PID namespace) of the process listening on `socket`.
/// Connects through `/proc/self/fd/<dir>/<name>`, so a long host path still fits in a
/// socket address.
pub fn peer_pid(socket: &Path) -> std::io::Result<i32> {
    let dir = socket.parent().unwrap_or(Path::new("/"));
    let name = socket.file_name().unwrap_or_default();
    let dir = std::fs::File::open(dir)?;
    let short = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    let stream = UnixStream::connect(short)?;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED fills a ucred of the given length.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if cred.pid <= 0 {
        return Err(std::io::Error::other(
            "the socket's process is not in this PID namespace",
        ));
    }
    Ok(cred.pid)
}

/// The pid of `pid` in its own (innermost) PID namespace: the last `NSpid` entry.
fn pid_in_own_namespace(pid: i32) -> Result<i32> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let status = std::fs::read_to_string(&path).map_err(Error::io("reading", &path))?;
    nspid(&status).ok_or_else(|| Error::Command {
        program: "procfs".into(),
        message: format!("no NSpid line in {}", path.display()),
    })
}

fn nspid(status: &str) -> Option<i32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// The disk file of a containerDisk: `path` in the image, or the one file under `/disk/`.
/// Returns its absolute path in the image. `field` names the volume's field in errors.
pub fn disk_path(root: &ImageRoot, path: Option<&str>, field: &str) -> Result<String> {
    if let Some(p) = path {
        check_path(p, field)?;
        return if plain_file(&root.host, p) {
            Ok(p.to_owned())
        } else {
            Err(not_in_image(
                field,
                format!("{p} is not a file in image {:?}", root.image),
            ))
        };
    }
    let disk = root.host.join("disk");
    let mut files: Vec<String> = std::fs::read_dir(&disk)
        .map_err(|e| {
            not_in_image(
                field,
                format!(
                    "image {:?} has no /disk/ directory ({e}); set path",
                    root.image
                ),
            )
        })?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| format!("/disk/{}", e.file_name().to_string_lossy()))
        .collect();
    match files.len() {
        1 => Ok(files.remove(0)),
        n => Err(not_in_image(
            field,
            format!(
                "image {:?} has {n} files under /disk/, expected one (set path)",
                root.image
            ),
        )),
    }
}

/// Whether `p` is a regular file under `root` reached without a symbolic link: a link
/// would be followed outside the image by whoever opens it (QEMU in the launcher).
pub fn plain_file(root: &Path, p: &str) -> bool {
    let mut at = root.to_path_buf();
    let parts: Vec<_> = Path::new(p.trim_start_matches('/')).components().collect();
    for (i, c) in parts.iter().enumerate() {
        at.push(c);
        let Ok(meta) = std::fs::symlink_metadata(&at) else {
            return false;
        };
        let last = i + 1 == parts.len();
        if meta.file_type().is_symlink() || (last && !meta.is_file()) || (!last && !meta.is_dir()) {
            return false;
        }
    }
    !parts.is_empty()
}

fn not_in_image(field: &str, message: String) -> Error {
    Error::NotInImage {
        field: field.to_owned(),
        message,
    }
}

/// An absolute path without `..`: it must stay inside the image.
pub fn check_path(p: &str, field: &str) -> Result<()> {
    let path = Path::new(p);
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(Error::unsupported(
            field,
            format!("{p:?} must be an absolute path without '..'"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn nspid_is_the_innermost_pid() {
        assert_eq!(nspid("Name:\tx\nNSpid:\t4242\t17\t3\nPPid: 1\n"), Some(3));
        assert_eq!(nspid("NSpid:\t99\n"), Some(99));
        assert_eq!(nspid("Name: x\n"), None);
    }

    #[test]
    fn finds_the_listening_process_and_its_disk() {
        let tmp = tempfile::tempdir().unwrap();
        // A socket path longer than a socket address allows: reached through the fd.
        let deep = tmp.path().join("d".repeat(100));
        std::fs::create_dir_all(&deep).unwrap();
        let socket = deep.join("volumeroot.sock");
        let dir = std::fs::File::open(&deep).unwrap();
        let _listener = UnixListener::bind(
            Path::new("/proc/self/fd")
                .join(dir.as_raw_fd().to_string())
                .join("volumeroot.sock"),
        )
        .unwrap();
        assert!(socket.exists());
        assert_eq!(peer_pid(&socket).unwrap(), std::process::id() as i32);
        assert!(peer_pid(&deep.join("none.sock")).is_err());

        let root = ImageRoot {
            image: "example/disk:1".into(),
            container: "volumeroot".into(),
            host: tmp.path().join("img"),
            launcher: "/proc/7/root".into(),
        };
        std::fs::create_dir_all(root.host.join("disk")).unwrap();
        std::fs::write(root.host.join("disk/a.qcow2"), b"").unwrap();
        let field = "spec.volumes[0].containerDisk";
        assert_eq!(disk_path(&root, None, field).unwrap(), "/disk/a.qcow2");
        assert_eq!(
            root.file("/disk/a.qcow2").1,
            Path::new("/proc/7/root/disk/a.qcow2")
        );
        assert!(disk_path(&root, Some("/disk/a.qcow2"), field).is_ok());
        let e = disk_path(&root, Some("/disk/../../etc/passwd"), field).unwrap_err();
        assert!(e.to_string().starts_with(field), "{e}");
        std::os::unix::fs::symlink("/etc/passwd", root.host.join("disk/l")).unwrap();
        let e = disk_path(&root, Some("/disk/l"), field)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/disk/l is not a file"), "{e}");
        assert_eq!(
            disk_path(&root, None, field).unwrap(),
            "/disk/a.qcow2",
            "links do not count"
        );
        std::fs::write(root.host.join("disk/b.qcow2"), b"").unwrap();
        let e = disk_path(&root, None, field).unwrap_err().to_string();
        assert!(e.contains("2 files under /disk/"), "{e}");
    }
}

//! devnode's stand-in for the launcher pod's disk containers and their program
//! (deploy/images/container-disk.c; docs/contracts.md, "The launcher pod").
//!
//! devnode has no container images: a containerDisk or kernel-boot image is a directory of
//! its image store (`--image-store`, laid out as the image). A container whose command is
//! `container-disk` runs `devnode container-disk` instead, with the same arguments:
//! `--socket PATH` binds the socket (in the container's mount namespace, where the pod's
//! volumes are mounted), then, given `--root <image dir>`, chroots into the image's
//! directory, so `/proc/<pid>/root` is the image's tree as with a real container, and only
//! then listens on it (whoever connects reads that tree, never the node's); it
//! drops every capability (the pod asks for `drop: [ALL]`, and QEMU, whose capabilities
//! libvirt clears, may open `/proc/<pid>/root` only of a process with no more capabilities
//! than its own), then accepts and closes connections until SIGTERM or until the socket is
//! gone, as the C program does. `--copy-to FILE` (the init container `container-disk-binary`)
//! writes a stand-in script there: devnode runs the disk containers itself.
//!
//! The containers' `runAsUser`/`runAsGroup` come as `--uid`/`--gid` (the pod's non-root
//! user, 107): the stand-in starts as root for the chroot, makes the socket as that user
//! (waiting, as the C program does, until virt-handler has handed the VMI's directory to
//! it), then becomes that user for good and stays dumpable, so the launcher and QEMU,
//! same uid, may open its `/proc/<pid>/root` as in a real container.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen, socket,
};

use crate::{Error, Result};

/// The command name devnode runs itself.
pub use ferrovirt_node_contract::pod::CONTAINER_DISK_COMMAND as COMMAND;

/// Whether a container's command is `container-disk` (by its file name).
pub fn is_container_disk(command: Option<&[String]>) -> bool {
    command
        .and_then(|c| c.first())
        .and_then(|c| Path::new(c).file_name())
        .is_some_and(|n| n == COMMAND)
}

/// The container's user, when its security context names one.
#[derive(Clone, Copy, Debug, Default)]
pub struct User {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// How long the socket's directory may stay not writable (virt-handler hands it over).
const HANDOVER_WAIT: Duration = Duration::from_secs(120);

/// `devnode container-disk ...`; the return value is the exit code.
pub fn run(socket: Option<&Path>, copy_to: Option<&Path>, root: Option<&Path>, user: User) -> i32 {
    let result = match (socket, copy_to) {
        (Some(s), None) => serve(s, root, user),
        (None, Some(to)) => copy(to, user),
        _ => Err(Error::Invalid(
            "container-disk: give exactly one of --socket PATH and --copy-to FILE".into(),
        )),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("container-disk: {}", crate::chain(&e));
            1
        }
    }
}

const STAND_IN: &str = "#!/bin/sh\n\
# devnode runs the disk containers itself (devnode container-disk); this file stands in\n\
# for the program the init container copies on a real node.\n\
exec devnode container-disk \"$@\"\n";

fn copy(to: &Path, user: User) -> Result<()> {
    std::fs::write(to, STAND_IN).map_err(Error::io(format!("write {}", to.display())))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))
        .map_err(Error::io(format!("chmod {}", to.display())))?;
    std::os::unix::fs::lchown(to, user.uid, user.gid)
        .map_err(Error::io(format!("chown {}", to.display())))
}

/// Acts as `user` for the calls `f` makes (effective ids only), then root again.
fn as_user<T>(user: User, f: impl FnOnce() -> Result<T>) -> Result<T> {
    use nix::unistd::{Gid, Uid, setegid, seteuid};
    if let Some(gid) = user.gid {
        setegid(Gid::from_raw(gid)).map_err(Error::sys("setegid"))?;
    }
    if let Some(uid) = user.uid {
        seteuid(Uid::from_raw(uid)).map_err(Error::sys("seteuid"))?;
    }
    let out = f();
    seteuid(Uid::from_raw(0)).map_err(Error::sys("seteuid 0"))?;
    setegid(Gid::from_raw(0)).map_err(Error::sys("setegid 0"))?;
    out
}

/// Creates `dir` (mode 0700) once this user may write where it goes.
fn make_dir(dir: &Path) -> Result<()> {
    let started = std::time::Instant::now();
    let mut told = false;
    loop {
        let made = match std::fs::create_dir(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        };
        let writable = made.is_ok()
            && nix::unistd::access(
                dir,
                nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
            )
            .is_ok();
        match made {
            Ok(()) if writable => return Ok(()),
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
            Err(e) => return Err(Error::io(format!("create {}", dir.display()))(e)),
        }
        if started.elapsed() > HANDOVER_WAIT {
            return Err(Error::Invalid(format!(
                "{} is not writable by uid {}: is virt-handler running on this node?",
                dir.display(),
                nix::unistd::geteuid()
            )));
        }
        if !told {
            eprintln!(
                "container-disk: waiting for virt-handler to hand {} to uid {}",
                dir.display(),
                nix::unistd::geteuid()
            );
            told = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Becomes `user` for good (real, effective and saved ids), staying dumpable: a process
/// that changed its ids without an exec is not, and then no other process of its user
/// may open its `/proc/<pid>/root`.
fn become_user(user: User) -> Result<()> {
    use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};
    if let Some(gid) = user.gid {
        setgroups(&[]).map_err(Error::sys("setgroups"))?;
        setgid(Gid::from_raw(gid)).map_err(Error::sys("setgid"))?;
    }
    if let Some(uid) = user.uid {
        setuid(Uid::from_raw(uid)).map_err(Error::sys("setuid"))?;
    }
    nix::sys::prctl::set_dumpable(true).map_err(Error::sys("set dumpable"))
}

extern "C" fn exit_now(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(0) }
}

fn serve(socket: &Path, root: Option<&Path>, user: User) -> Result<()> {
    let dir = socket.parent().unwrap_or(Path::new("/"));
    let name: PathBuf = socket
        .file_name()
        .ok_or_else(|| {
            Error::Invalid(format!("socket path {} has no file name", socket.display()))
        })?
        .into();
    // Bound here, where the socket's path is; listened on only after the chroot below: a
    // connection accepted before it would have the caller read `/proc/<pid>/root` as the
    // node's tree instead of the image's (virt-handler found no kernel in it, CI).
    let bound = as_user(user, || {
        make_dir(dir)?;
        let _ = std::fs::remove_file(socket);
        bind_unlistened(socket)
    })?;
    // Kept open: after the chroot the socket's directory is reached through it.
    let dir_fd = std::fs::File::open(dir).map_err(Error::io(format!("open {}", dir.display())))?;
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only calls _exit.
        unsafe { libc::signal(sig, exit_now as *const () as libc::sighandler_t) };
    }
    if let Some(root) = root {
        nix::unistd::chroot(root).map_err(Error::sys(format!("chroot {}", root.display())))?;
        nix::unistd::chdir("/").map_err(Error::sys("chdir /"))?;
    }
    become_user(user)?;
    drop_capabilities()?;
    let listen_err = |e| Error::Sys(format!("listen on {}", socket.display()), e);
    listen(&bound, Backlog::new(16).map_err(listen_err)?).map_err(listen_err)?;
    let listener = UnixListener::from(bound);
    eprintln!(
        "container-disk: listening on {} (root {})",
        socket.display(),
        root.map_or("/".into(), |r| r.display().to_string())
    );
    loop {
        let mut fds = [libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, 1000) };
        if ready > 0 {
            while let Ok((conn, _)) = listener.accept() {
                drop(conn);
            }
        }
        let gone = nix::sys::stat::fstatat(
            &dir_fd,
            name.as_path(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .is_err();
        if gone {
            eprintln!("container-disk: {} is gone; exiting", socket.display());
            return Ok(());
        }
        if ready < 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A non-blocking Unix stream socket bound to `path` and not listening yet: a connect to it
/// is refused, as if it were not there, until [`listen`].
fn bind_unlistened(path: &Path) -> Result<OwnedFd> {
    let err = |e| Error::Sys(format!("bind {}", path.display()), e);
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(err)?;
    bind(fd.as_raw_fd(), &UnixAddr::new(path).map_err(err)?).map_err(err)?;
    Ok(fd)
}

/// Empties the effective, permitted and inheritable capability sets (capset(2), version 3).
fn drop_capabilities() -> Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset with a valid header and two data structs, as version 3 expects.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if rc != 0 {
        return Err(Error::Io {
            context: "drop capabilities".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_command_by_its_file_name() {
        let c = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(is_container_disk(Some(&c(&[
            "/var/run/ferrovirt/container-disk-binary/container-disk",
            "--socket",
            "/x.sock"
        ]))));
        assert!(is_container_disk(Some(&c(&[
            "container-disk",
            "--copy-to",
            "/a"
        ]))));
        assert!(!is_container_disk(Some(&c(&["/bin/sh"]))));
        assert!(!is_container_disk(None));
    }

    #[test]
    fn a_bound_socket_refuses_connections_until_it_listens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kernel-boot.sock");
        let bound = bind_unlistened(&path).unwrap();
        assert!(path.exists(), "the socket's file is made by the bind");
        let refused = std::os::unix::net::UnixStream::connect(&path).unwrap_err();
        assert_eq!(
            refused.raw_os_error(),
            Some(libc::ECONNREFUSED),
            "before listen: {refused}"
        );
        listen(&bound, Backlog::new(16).unwrap()).unwrap();
        std::os::unix::net::UnixStream::connect(&path).expect("a connect once it listens");
    }
}

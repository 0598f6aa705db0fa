//! devnode's stand-in for the launcher pod's disk containers and their program
//! (deploy/images/container-disk.c; docs/contracts.md, "The launcher pod").
//!
//! devnode has no container images: a containerDisk or kernel-boot image is a directory of
//! its image store (`--image-store`, laid out as the image). A container whose command is
//! `container-disk` runs `devnode container-disk` instead, with the same arguments:
//! `--socket PATH` binds the socket (in the container's mount namespace, where the pod's
//! volumes are mounted), then, given `--root <image dir>`, chroots into the image's
//! directory, so `/proc/<pid>/root` is the image's tree as with a real container; it
//! drops every capability (the pod asks for `drop: [ALL]`, and QEMU, whose capabilities
//! libvirt clears, may open `/proc/<pid>/root` only of a process with no more capabilities
//! than its own), then accepts and closes connections until SIGTERM or until the socket is
//! gone, as the C program does. `--copy-to FILE` (the init container `container-disk-binary`)
//! writes a stand-in script there: devnode runs the disk containers itself.

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// `devnode container-disk ...`; the return value is the exit code.
pub fn run(socket: Option<&Path>, copy_to: Option<&Path>, root: Option<&Path>) -> i32 {
    let result = match (socket, copy_to) {
        (Some(s), None) => serve(s, root),
        (None, Some(to)) => copy(to),
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

fn copy(to: &Path) -> Result<()> {
    std::fs::write(to, STAND_IN).map_err(Error::io(format!("write {}", to.display())))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))
        .map_err(Error::io(format!("chmod {}", to.display())))
}

extern "C" fn exit_now(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(0) }
}

fn serve(socket: &Path, root: Option<&Path>) -> Result<()> {
    let dir = socket.parent().unwrap_or(Path::new("/"));
    let name: PathBuf = socket
        .file_name()
        .ok_or_else(|| {
            Error::Invalid(format!("socket path {} has no file name", socket.display()))
        })?
        .into();
    std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    let _ = std::fs::remove_file(socket);
    let listener =
        UnixListener::bind(socket).map_err(Error::io(format!("listen on {}", socket.display())))?;
    listener
        .set_nonblocking(true)
        .map_err(Error::io("set the socket non-blocking"))?;
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
    drop_capabilities()?;
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
}

//! `virt-handler console <uid>`: this terminal on a VMI's serial socket, for debugging on
//! the node (ferroctl will reach the same socket through virt-api).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::{Error, Result};

/// Ctrl-]
const ESCAPE: u8 = 0x1d;

/// Puts the terminal in raw mode; returns the settings to restore, if it is one.
fn enter_raw() -> Option<libc::termios> {
    // SAFETY: termios calls on stdin with a zeroed struct they fill in.
    unsafe {
        if libc::isatty(0) != 1 {
            return None;
        }
        let mut saved: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut saved) != 0 {
            return None;
        }
        let mut raw = saved;
        libc::cfmakeraw(&mut raw);
        libc::tcsetattr(0, libc::TCSANOW, &raw);
        Some(saved)
    }
}

fn restore(saved: Option<libc::termios>) {
    if let Some(saved) = saved {
        // SAFETY: restores the settings `enter_raw` read.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &saved) };
    }
}

/// Copies stdin to the console and the console to stdout until Ctrl-] or the guest's
/// console goes away.
pub fn attach(socket: &Path) -> Result<()> {
    let stream = UnixStream::connect(socket).map_err(Error::io("connecting to", socket))?;
    eprintln!("Connected to {} (escape: Ctrl-])\r", socket.display());
    let saved = enter_raw();
    let mut from_guest = stream.try_clone().map_err(Error::io("cloning", socket))?;
    std::thread::spawn(move || {
        let mut out = std::io::stdout();
        let mut buf = [0u8; 4096];
        while let Ok(n) = from_guest.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                break;
            }
        }
        // The console closed: leave as if escaped.
        restore(saved);
        std::process::exit(0);
    });
    let mut to_guest = stream;
    let mut buf = [0u8; 1024];
    let mut stdin = std::io::stdin();
    loop {
        let n = stdin
            .read(&mut buf)
            .map_err(Error::io("reading", "stdin"))?;
        if n == 0 {
            return Ok(());
        }
        if let Some(i) = buf[..n].iter().position(|b| *b == ESCAPE) {
            let _ = to_guest.write_all(&buf[..i]);
            return Ok(());
        }
        to_guest
            .write_all(&buf[..n])
            .map_err(Error::io("writing to", socket))?;
    }
}

//! A container program for devnode's tests (image `ferrovirt/devnode-testpod`).
//!
//! `exit <code>` · `check-file <path>` (exit 0 if it exists, else 1) ·
//! `wait-term <file> [<armed>]` (write <armed> once SIGTERM is handled, sleep until
//! SIGTERM, then write <file> and exit 0) ·
//! `daemonize <token>` (start a setsid'd child `sleep <token>`, then sleep) ·
//! `sleep <token>` · `print-env <NAME>...` (print NAME=value lines, then exit 0).
//! Every mode first prints its pid as seen in its namespace.

use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static TERM: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    TERM.store(true, Ordering::SeqCst);
}

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(1000));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("devnode-testpod pid {} args {args:?}", std::process::id());
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(0).as_str() {
        "exit" => std::process::exit(arg(1).parse().unwrap_or(1)),
        "check-file" => std::process::exit(if std::path::Path::new(&arg(1)).exists() {
            0
        } else {
            1
        }),
        "wait-term" => {
            // SAFETY: the handler only stores to an atomic.
            unsafe { libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t) };
            if let Some(armed) = args.get(2) {
                std::fs::write(armed, "").expect("write the armed file");
            }
            while !TERM.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            std::fs::write(arg(1), "SIGTERM\n").expect("write the marker file");
            println!("got SIGTERM");
            std::process::exit(0);
        }
        "daemonize" => {
            let exe = std::env::current_exe().expect("own path");
            let mut cmd = std::process::Command::new(exe);
            cmd.arg("sleep").arg(arg(1));
            // SAFETY: setsid is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    libc::setsid();
                    Ok(())
                });
            }
            let child = cmd.spawn().expect("spawn the daemon");
            println!("daemon pid {}", child.id());
            std::mem::forget(child);
            sleep_forever();
        }
        "sleep" => sleep_forever(),
        "print-env" => {
            for name in &args[1..] {
                println!("{name}={}", std::env::var(name).unwrap_or_default());
            }
        }
        other => {
            eprintln!("devnode-testpod: unknown mode {other:?}");
            std::process::exit(2);
        }
    }
}

//! The processes of this machine, read from /proc: what the soak kills and counts.

/// One live (not zombie) process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    /// Clock ticks after boot: with the pid, tells a restarted process from the old one.
    pub start: u64,
    pub argv: Vec<String>,
}

impl Proc {
    /// The program's file name (`virt-launcher`, `qemu-system-x86_64`).
    pub fn program(&self) -> &str {
        self.argv
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a))
            .unwrap_or("")
    }

    /// The value after `--flag` (or of `--flag=value`).
    pub fn flag(&self, flag: &str) -> Option<&str> {
        let eq = format!("{flag}=");
        self.argv.iter().enumerate().find_map(|(i, a)| {
            if a == flag {
                self.argv.get(i + 1).map(String::as_str)
            } else {
                a.strip_prefix(&eq)
            }
        })
    }

    pub fn has_arg(&self, arg: &str) -> bool {
        self.argv.iter().any(|a| a == arg || a.contains(arg))
    }

    /// QEMU's libvirt domain name (`-name guest=<ns>_<name>,...`).
    pub fn qemu_domain(&self) -> Option<&str> {
        if !self.program().starts_with("qemu-system") {
            return None;
        }
        self.argv
            .iter()
            .find_map(|a| a.strip_prefix("guest="))
            .map(|rest| rest.split(',').next().unwrap_or(rest))
    }
}

/// Every live process.
pub fn all() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read)
        .collect()
}

fn read(pid: u32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state ppid ... starttime (field 22).
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some(Proc {
        pid,
        ppid,
        start,
        argv,
    })
}

/// SIGKILL, as a crash or the OOM killer would.
pub fn kill(pid: u32) {
    // SAFETY: kill(2) on a pid this soak found among its own cluster's processes.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_its_flags() {
        let me = all()
            .into_iter()
            .find(|p| p.pid == std::process::id())
            .expect("this process");
        assert_eq!(me.ppid, std::os::unix::process::parent_id());
        assert!(me.start > 0);
        let p = Proc {
            pid: 1,
            ppid: 0,
            start: 1,
            argv: [
                "/usr/bin/qemu-system-x86_64",
                "-name",
                "guest=chaos_vm-1,debug-threads=on",
                "--vmi-uid=u1",
            ]
            .map(String::from)
            .to_vec(),
        };
        assert_eq!(p.qemu_domain(), Some("chaos_vm-1"));
        assert_eq!(p.flag("--vmi-uid"), Some("u1"));
        assert_eq!(p.flag("-name"), Some("guest=chaos_vm-1,debug-threads=on"));
    }
}

use clap::Parser;
use devnode::args::{Cli, Cmd};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The shim and nsexec must stay single-threaded (unshare/setns of the mount
    // namespace refuse multi-threaded callers), so they run before any runtime exists.
    match cli.cmd {
        Some(Cmd::Shim { spec }) => std::process::exit(devnode::shim::run(&spec)),
        Some(Cmd::Nsexec { pid, command }) => {
            std::process::exit(devnode::nsexec::run(pid, &command))
        }
        Some(Cmd::Pause) => std::process::exit(devnode::sandbox::pause()),
        Some(Cmd::ContainerDisk {
            socket,
            copy_to,
            root,
            uid,
            gid,
        }) => std::process::exit(devnode::containerdisk::run(
            socket.as_deref(),
            copy_to.as_deref(),
            root.as_deref(),
            devnode::containerdisk::User { uid, gid },
        )),
        Some(Cmd::StopAll { state_dir }) => Ok(devnode::runtime::stop_all(&state_dir)?),
        None => {
            devnode::args::init_logging(cli.run.log_format, "info");
            let rt = tokio::runtime::Runtime::new()?;
            if let Err(e) = rt.block_on(devnode::run(cli.run)) {
                // One line, the error chain, last: what the node cannot do and why (a
                // forbidden request names the verb and the resource).
                eprintln!("devnode failed: {}", devnode::chain(&e));
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

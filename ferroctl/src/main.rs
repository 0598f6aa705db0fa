//! ferroctl: the virtctl-style command line of Ferrovirt (start, stop, restart, console,
//! vnc, ...).
//!
//! Not built yet: the subresource API it talks to (virt-api) comes in a later issue. Until
//! then each command says so and exits non-zero.

use clap::{Parser, Subcommand};

/// Control Ferrovirt virtual machines (not implemented yet).
#[derive(Parser, Debug)]
#[command(name = "ferroctl", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a VirtualMachine.
    Start { name: String },
    /// Stop a VirtualMachine.
    Stop { name: String },
    /// Restart a VirtualMachine.
    Restart { name: String },
    /// Attach to the serial console of a VirtualMachineInstance.
    Console { name: String },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    tracing::error!(command = ?cli.command, "ferroctl is not implemented yet: it needs virt-api's subresources (a later issue)");
    std::process::ExitCode::from(2)
}

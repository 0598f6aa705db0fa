//! ferroctl: the virtctl-style command line of Ferrovirt. It talks to virt-api's
//! `subresources.kubevirt.io` through the API server, as virtctl does. The same program is
//! installed as `kubectl-ferro`, so `kubectl ferro console my-vm` works (kubectl finds
//! plugins by that name on the PATH).

mod cli;
mod client;
mod console;
mod error;
mod expose;
mod stream;
mod terminal;
mod vnc;

use clap::{CommandFactory, FromArgMatches};

pub use error::{Error, Result};

/// Runs the command line as `name` (`ferroctl` or `kubectl ferro`).
pub fn main(name: &'static str) -> std::process::ExitCode {
    let matches = cli::Cli::command().name(name).bin_name(name).get_matches();
    let cli = match cli::Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    // kube logs every refused request at ERROR; the refusal is printed once, below.
    runtime::init_logging(cli.log_format, "warn,kube_client::client::builder=off");
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = match rt.block_on(run(&cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", runtime::chain(&e));
            std::process::ExitCode::FAILURE
        }
    };
    // A console's stdin reader may still block in read(2): do not wait for it.
    rt.shutdown_background();
    code
}

async fn run(cli: &cli::Cli) -> Result<()> {
    use cli::Command;
    if cli.command == Command::Version {
        println!("Client Version: v{}", env!("CARGO_PKG_VERSION"));
    }
    let streaming = matches!(cli.command, Command::Console { .. } | Command::Vnc { .. });
    let (client, namespace) = client::connect(cli, streaming).await?;
    match &cli.command {
        Command::Console { name, timeout } => {
            console::run(&client, &namespace, name, *timeout).await
        }
        Command::Vnc { name, flags } => vnc::run(&client, &namespace, name, flags).await,
        Command::Pause { name, dry_run, .. } | Command::Unpause { name, dry_run, .. } => {
            let sub = if matches!(cli.command, Command::Pause { .. }) {
                "pause"
            } else {
                "unpause"
            };
            let body = if *dry_run {
                serde_json::json!({"dryRun": ["All"]})
            } else {
                serde_json::json!({})
            };
            client::put_subresource(
                &client,
                &namespace,
                "virtualmachineinstances",
                name,
                sub,
                &body,
            )
            .await?;
            println!("VMI {name} was scheduled to {sub}");
            Ok(())
        }
        Command::Expose { kind, name, flags } => {
            expose::run(&client, &namespace, *kind, name, flags).await
        }
        Command::Version => {
            let v = client::server_version(&client).await?;
            println!(
                "Server Version: {}",
                v["gitVersion"].as_str().unwrap_or("unknown")
            );
            Ok(())
        }
        lifecycle => {
            let (subresource, name, body) = lifecycle.request().expect("a lifecycle command");
            client::put_subresource(
                &client,
                &namespace,
                "virtualmachines",
                name,
                subresource,
                &body,
            )
            .await?;
            let done = match subresource {
                "start" => "was scheduled to start",
                "stop" => "was scheduled to stop",
                _ => "was scheduled to restart",
            };
            println!("VM {name} {done}");
            Ok(())
        }
    }
}

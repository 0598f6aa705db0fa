//! ferroctl: the virtctl-style command line of Ferrovirt. It talks to virt-api's
//! `subresources.kubevirt.io` through the API server, as virtctl does.

mod cli;
mod client;
mod error;

use clap::Parser;

pub use error::{Error, Result};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    // kube logs every refused request at ERROR; the refusal is printed once, below.
    runtime::init_logging(cli.log_format, "warn,kube_client::client::builder=off");
    match run(&cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", runtime::chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: &cli::Cli) -> Result<()> {
    if cli.command == cli::Command::Version {
        println!("Client Version: v{}", env!("CARGO_PKG_VERSION"));
    }
    let (client, namespace) = client::connect(cli).await?;
    match cli.command.request() {
        Some((subresource, name, body)) => {
            client::put_vm_subresource(&client, &namespace, name, subresource, &body).await?;
            let done = match subresource {
                "start" => "was scheduled to start",
                "stop" => "was scheduled to stop",
                _ => "was scheduled to restart",
            };
            println!("VM {name} {done}");
        }
        None => {
            let v = client::server_version(&client).await?;
            println!(
                "Server Version: {}",
                v["gitVersion"].as_str().unwrap_or("unknown")
            );
        }
    }
    Ok(())
}

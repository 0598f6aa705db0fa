use std::process::ExitCode;

use clap::Parser;
use virt_handler::args::{Args, Command, init_logging};

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    match args.command {
        Some(Command::ProbeKvm { device }) => Ok(virt_handler::kvm::probe_main(&device)),
        Some(Command::Console { uid }) => {
            let socket = virt_handler::vmi_dir::RunDir::new(&args.run.run_dir)
                .vmi(&uid)
                .serial_socket();
            virt_handler::console::attach(&socket)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::DomainXml {
            vmi,
            emulation,
            vmi_dir,
            kernel_root,
            host_disk_prefixes,
        }) => {
            let text = if vmi.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&vmi)?
            };
            let host_disks = if host_disk_prefixes.is_empty() {
                Default::default()
            } else {
                let prefixes: Vec<&str> = host_disk_prefixes.iter().map(String::as_str).collect();
                virt_handler::volumes::HostDiskPolicy::allow(&prefixes)
            };
            let xml = virt_handler::domain::from_manifest(
                &text,
                emulation,
                &vmi_dir,
                &kernel_root,
                &host_disks,
            )?;
            print!("{xml}");
            Ok(ExitCode::SUCCESS)
        }
        None => {
            init_logging(args.log_format, "info");
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                if let Some(server) = args.run.server() {
                    let client = ferrovirt_runtime::kube_client(
                        args.run.kubeconfig.as_deref(),
                        "ferrovirt-virt-handler",
                    )
                    .await
                    .map_err(virt_handler::Error::Runtime)?;
                    virt_handler::server::spawn(client, server).await?;
                }
                virt_handler::controller::run(args.run).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

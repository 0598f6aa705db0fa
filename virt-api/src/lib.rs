//! virt-api: Ferrovirt's `subresources.kubevirt.io` aggregated API server.
//!
//! Served: discovery (v1 and v1alpha3), `/version`, `/healthz`, the VM lifecycle
//! subresources `start`, `stop`, `restart` with KubeVirt's semantics, and the VMI's
//! `console` and `vnc` (websockets, [`console`]), `pause`/`unpause` and the guest agent's
//! `guestosinfo`, `userlist`, `filesystemlist` ([`guestagent`]), which go to the
//! VMI's virt-handler over mutual TLS ([`handler_client`], [`handler_certs`]). Requests
//! are authenticated as an aggregated server does it (front-proxy certificate + request
//! headers) and authorized by a SubjectAccessReview. The same HTTPS port serves the
//! admission webhooks (KubeVirt's defaults and validation of VMs and VMIs,
//! [`admission`]). KubeVirt's other subresources answer 501 with their name.
//! See docs/virt-api.md.

pub mod admission;
pub mod args;
pub mod authn;
pub mod authz;
pub mod console;
pub mod discovery;
mod error;
pub mod guestagent;
pub mod handler;
pub mod handler_certs;
pub mod handler_client;
pub mod kubevirt;
pub mod lifecycle;
pub mod metrics;
pub mod register;
pub mod route;
pub mod server;
pub mod serving_secret;
pub mod status;
pub mod tls;
pub mod vmi;

pub use error::{Error, Result};

use std::sync::Arc;

/// Runs virt-api until SIGTERM/SIGINT.
pub async fn run(args: args::Args) -> Result<()> {
    let client = runtime::kube_client(args.kubeconfig.as_deref(), "virt-api").await?;
    let auth = authn::RequestHeaderConfig::load(&client).await?;
    let mut names = tls::service_names(&args.service, &args.namespace);
    names.extend(args.tls_san.iter().cloned());
    let serving = serving_secret::shared(&client, &args.namespace, &names).await?;
    let tls_config = tls::server_config(&serving, auth.ca_certs()?)?;

    let metrics = Arc::new(metrics::Metrics::default());
    let (metrics_addr, metrics_task) = runtime::serve(args.metrics_addr, metrics.clone()).await?;
    let handler_tls = handler_certs::HandlerTls::default();
    let certs = tokio::spawn(handler_certs::keep(
        client.clone(),
        args.namespace.clone(),
        handler_tls.clone(),
        args.handler_cert_check_interval
            .0
            .unwrap_or(handler_certs::CHECK),
    ));
    let app = Arc::new(handler::App {
        client: client.clone(),
        auth,
        metrics,
        handler_tls,
        ping_interval: args.console_ping_interval.0,
    });
    let (addr, server) = server::serve(args.listen, tls_config, app).await?;
    tracing::info!(%addr, %metrics_addr, names = ?names, "serving subresources.kubevirt.io");
    let register = tokio::spawn(register::inject_ca_bundle(
        client.clone(),
        args.apiservice.clone(),
        serving.ca_pem.clone(),
    ));

    let mut webhooks: Vec<admission::register::Config> = args
        .mutating_webhook_configuration
        .iter()
        .filter(|n| !n.is_empty())
        .map(|n| admission::register::Config::Mutating(n.clone()))
        .collect();
    webhooks.extend(
        args.validating_webhook_configuration
            .iter()
            .filter(|n| !n.is_empty())
            .map(|n| admission::register::Config::Validating(n.clone())),
    );
    let register_webhooks = tokio::spawn(admission::register::inject_ca_bundle(
        client.clone(),
        webhooks,
        serving.ca_pem.clone(),
    ));

    runtime::shutdown_signal().await;
    register_webhooks.abort();
    certs.abort();
    register.abort();
    server.abort();
    metrics_task.abort();
    Ok(())
}

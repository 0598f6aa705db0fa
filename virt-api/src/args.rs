//! virt-api's flags; each can also be set from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use runtime::LogFormat;

/// Ferrovirt's subresources.kubevirt.io API server (aggregated behind kube-apiserver):
/// VM start, stop and restart with KubeVirt's semantics, and the admission webhooks for
/// VMs and VMIs (KubeVirt's defaults and validation). Console, VNC and pause are later
/// work.
#[derive(clap::Parser, Debug)]
#[command(name = "virt-api", version)]
pub struct Args {
    /// HTTPS address of the subresources API.
    #[arg(long, env = "VIRT_API_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Plain-HTTP address of /metrics and /healthz.
    #[arg(long, env = "VIRT_API_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Kubeconfig (default: KUBECONFIG, ~/.kube/config or in-cluster).
    #[arg(long, env = "VIRT_API_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Name of the Service in front of virt-api: the serving certificate is made for its
    /// DNS names (`<service>.<namespace>.svc`, ...).
    #[arg(long, env = "VIRT_API_SERVICE", default_value = "virt-api")]
    pub service: String,
    /// Namespace of that Service.
    #[arg(long, env = "VIRT_API_NAMESPACE", default_value = "kubevirt")]
    pub namespace: String,
    /// More names (DNS or IP) for the serving certificate, comma-separated.
    #[arg(long, env = "VIRT_API_TLS_SANS", value_delimiter = ',')]
    pub tls_san: Vec<String>,
    /// APIServices whose caBundle virt-api writes at start (empty: none).
    #[arg(
        long,
        env = "VIRT_API_APISERVICES",
        value_delimiter = ',',
        default_value = "v1.subresources.kubevirt.io,v1alpha3.subresources.kubevirt.io"
    )]
    pub apiservice: Vec<String>,
    /// MutatingWebhookConfigurations whose webhooks' caBundle virt-api writes at start
    /// (empty: none).
    #[arg(
        long,
        env = "VIRT_API_MUTATING_WEBHOOKS",
        value_delimiter = ',',
        default_value = "virt-api-mutator"
    )]
    pub mutating_webhook_configuration: Vec<String>,
    /// ValidatingWebhookConfigurations whose webhooks' caBundle virt-api writes at start
    /// (empty: none).
    #[arg(
        long,
        env = "VIRT_API_VALIDATING_WEBHOOKS",
        value_delimiter = ',',
        default_value = "virt-api-validator"
    )]
    pub validating_webhook_configuration: Vec<String>,
    /// Log format.
    #[arg(long, env = "VIRT_API_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
}

//! virt-api's flags; each can also be set from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use runtime::LogFormat;

/// Ferrovirt's subresources.kubevirt.io API server (aggregated behind kube-apiserver):
/// VM start, stop and restart with KubeVirt's semantics, VMI console, VNC, pause and
/// unpause through the VMI's virt-handler, and the admission webhooks for VMs and VMIs
/// (KubeVirt's defaults and validation).
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
    /// How often an open console or VNC stream pings its client (`30s`, `500ms`; `0`: never),
    /// so proxies that drop idle connections keep a quiet console.
    #[arg(long, env = "VIRT_API_CONSOLE_PING_INTERVAL", default_value = "30s")]
    pub console_ping_interval: Interval,
    /// How often the CA and certificates of the virt-api -> virt-handler connection are
    /// checked and renewed when due (docs/virt-api.md, "virt-api → virt-handler").
    #[arg(
        long,
        env = "VIRT_API_HANDLER_CERT_CHECK_INTERVAL",
        default_value = "60s"
    )]
    pub handler_cert_check_interval: Interval,
    /// Log format.
    #[arg(long, env = "VIRT_API_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
}

/// A duration such as `30s`, `500ms` or `2m`; `0` is none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval(pub Option<std::time::Duration>);

impl std::str::FromStr for Interval {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (n, unit) = t.split_at(split);
        let n: u64 = n
            .parse()
            .map_err(|_| format!("{s:?} is not a duration like 30s or 500ms"))?;
        let d = match unit {
            "ms" => std::time::Duration::from_millis(n),
            "s" | "" => std::time::Duration::from_secs(n),
            "m" => std::time::Duration::from_secs(n * 60),
            _ => return Err(format!("{s:?}: the unit must be ms, s or m")),
        };
        Ok(Self((!d.is_zero()).then_some(d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ping_intervals() {
        assert_eq!("30s".parse(), Ok(Interval(Some(Duration::from_secs(30)))));
        assert_eq!(
            "500ms".parse(),
            Ok(Interval(Some(Duration::from_millis(500))))
        );
        assert_eq!("0".parse(), Ok(Interval(None)));
        assert!("fast".parse::<Interval>().is_err());
        assert!("5h".parse::<Interval>().is_err());
    }
}

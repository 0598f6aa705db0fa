//! Authentication as an aggregated API server does it: the kube-apiserver's front proxy
//! presents a client certificate signed by the request-header CA, with a common name from
//! `requestheader-allowed-names`, and passes the user in the headers the ConfigMap
//! `kube-system/extension-apiserver-authentication` names. Anyone else is anonymous.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::{Error, Result};

pub const AUTH_CONFIGMAP: &str = "extension-apiserver-authentication";

/// The request-header part of `extension-apiserver-authentication`.
#[derive(Clone, Debug, Default)]
pub struct RequestHeaderConfig {
    /// PEM of `requestheader-client-ca-file`.
    pub ca_pem: String,
    /// Common names a front-proxy certificate may have; empty: any signed by the CA.
    pub allowed_names: Vec<String>,
    pub username_headers: Vec<String>,
    pub group_headers: Vec<String>,
    pub extra_prefixes: Vec<String>,
}

/// Who a request is from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl RequestHeaderConfig {
    /// Reads the ConfigMap. The CA is required (KubeVirt's virt-api requires it too).
    pub async fn load(client: &kube::Client) -> Result<Self> {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
        let cm = api
            .get(AUTH_CONFIGMAP)
            .await
            .map_err(Error::AuthConfigMap)?;
        Self::from_data(&cm.data.unwrap_or_default())
    }

    pub fn from_data(data: &BTreeMap<String, String>) -> Result<Self> {
        let ca_pem = data
            .get("requestheader-client-ca-file")
            .cloned()
            .ok_or(Error::AuthConfigMissing("requestheader-client-ca-file"))?;
        let list = |key: &'static str| -> Result<Vec<String>> {
            match data.get(key).map(|s| s.trim()).filter(|s| !s.is_empty()) {
                None => Ok(Vec::new()),
                Some(text) => serde_json::from_str(text)
                    .map_err(|source| Error::AuthConfigList { key, source }),
            }
        };
        Ok(Self {
            ca_pem,
            allowed_names: list("requestheader-allowed-names")?,
            username_headers: list("requestheader-username-headers")?,
            group_headers: list("requestheader-group-headers")?,
            extra_prefixes: list("requestheader-extra-headers-prefix")?,
        })
    }

    /// The request-header CA's certificates.
    pub fn ca_certs(&self) -> Result<Vec<CertificateDer<'static>>> {
        CertificateDer::pem_slice_iter(self.ca_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::Pem)
    }

    /// Whether a (CA-verified) client certificate may speak for users: its common name
    /// is one of the allowed names, or no names are configured.
    pub fn proxy_allowed(&self, common_name: Option<&str>) -> bool {
        self.allowed_names.is_empty()
            || common_name.is_some_and(|cn| self.allowed_names.iter().any(|n| n == cn))
    }

    /// The user in the request headers, as KubeVirt reads them: the first configured user
    /// header present, all values of the first group header present (required), extras by
    /// prefix with the key lower-cased and %-decoded.
    pub fn user(&self, headers: &http::HeaderMap) -> Result<User, String> {
        let name = self
            .username_headers
            .iter()
            .find_map(|h| headers.get(h.as_str()))
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .ok_or("a valid user header is required for authorization")?
            .to_string();
        let groups = self
            .group_headers
            .iter()
            .find(|h| headers.contains_key(h.as_str()))
            .map(|h| {
                headers
                    .get_all(h.as_str())
                    .iter()
                    .filter_map(|v| v.to_str().ok().map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .ok_or("a valid group header is required for authorization")?;
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for prefix in &self.extra_prefixes {
            let prefix = prefix.to_ascii_lowercase();
            for (key, value) in headers {
                // HeaderName is lower case already.
                if let Some(rest) = key.as_str().strip_prefix(&prefix)
                    && let Ok(v) = value.to_str()
                {
                    extra
                        .entry(percent_decode(rest))
                        .or_default()
                        .push(v.to_string());
                }
            }
        }
        Ok(User {
            name,
            groups,
            extra,
        })
    }
}

/// The common name of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
}

/// `%xx` escapes decoded; a malformed escape keeps the key as it is (as Go's
/// `url.PathUnescape` fallback in KubeVirt does).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None => return s.to_string(),
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RequestHeaderConfig {
        let data: BTreeMap<String, String> = [
            ("requestheader-client-ca-file", "PEM"),
            ("requestheader-allowed-names", r#"["front-proxy-client"]"#),
            ("requestheader-username-headers", r#"["X-Remote-User"]"#),
            ("requestheader-group-headers", r#"["X-Remote-Group"]"#),
            (
                "requestheader-extra-headers-prefix",
                r#"["X-Remote-Extra-"]"#,
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        RequestHeaderConfig::from_data(&data).unwrap()
    }

    #[test]
    fn reads_user_groups_and_extras_from_the_named_headers() {
        let mut h = http::HeaderMap::new();
        h.insert("x-remote-user", "alice".parse().unwrap());
        h.append("x-remote-group", "dev".parse().unwrap());
        h.append("x-remote-group", "system:authenticated".parse().unwrap());
        h.insert("x-remote-extra-scopes%2fa", "s1".parse().unwrap());
        let user = config().user(&h).unwrap();
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, ["dev", "system:authenticated"]);
        assert_eq!(user.extra.get("scopes/a").unwrap(), &["s1"]);
    }

    #[test]
    fn user_and_group_headers_are_required() {
        let mut h = http::HeaderMap::new();
        assert!(config().user(&h).unwrap_err().contains("user header"));
        h.insert("x-remote-user", "alice".parse().unwrap());
        assert!(config().user(&h).unwrap_err().contains("group header"));
    }

    #[test]
    fn only_allowed_proxy_names() {
        let c = config();
        assert!(c.proxy_allowed(Some("front-proxy-client")));
        assert!(!c.proxy_allowed(Some("someone-else")));
        assert!(!c.proxy_allowed(None));
        let open = RequestHeaderConfig {
            allowed_names: vec![],
            ..c
        };
        assert!(open.proxy_allowed(Some("anyone")));
    }

    #[test]
    fn the_ca_is_required() {
        let e = RequestHeaderConfig::from_data(&BTreeMap::new()).unwrap_err();
        assert!(matches!(e, Error::AuthConfigMissing(_)));
    }
}

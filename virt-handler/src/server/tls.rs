//! The serving certificate and client CA bundle from the Secret virt-api writes, kept
//! fresh: every [`super::RELOAD`] the Secret is read again and a changed one replaces the
//! TLS configuration for new connections (open ones keep theirs).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ferrovirt_node_contract::handler_api::SERVER_CERTS_SECRET;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Error, Result, chain};

/// The Secret's data and the TLS configuration made from it.
type Current = (BTreeMap<String, ByteString>, Arc<rustls::ServerConfig>);

/// The current TLS configuration and the Secret data it was made from.
#[derive(Clone)]
pub struct Reloading {
    current: Arc<RwLock<Current>>,
}

impl Reloading {
    /// Reads the Secret until it exists and is usable (virt-api makes it at its start).
    pub async fn wait(client: &kube::Client, namespace: &str) -> Self {
        let mut logged = false;
        loop {
            match read(client, namespace).await {
                Ok(Some(data)) => match server_config(&data) {
                    Ok(config) => {
                        return Self {
                            current: Arc::new(RwLock::new((data, config))),
                        };
                    }
                    Err(e) => {
                        tracing::warn!(error = %chain(&e), "the handler's certificate Secret is not usable yet")
                    }
                },
                Ok(None) if !logged => {
                    tracing::info!(secret = SERVER_CERTS_SECRET, %namespace, "waiting for virt-api to write the handler's certificates");
                    logged = true;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "reading the handler's certificate Secret")
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// The configuration for a new connection.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    /// Re-reads the Secret every [`super::RELOAD`]; a changed, usable one takes over.
    pub async fn keep_fresh(self, client: kube::Client, namespace: String) {
        loop {
            tokio::time::sleep(super::RELOAD).await;
            let data = match read(&client, &namespace).await {
                Ok(Some(d)) => d,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "re-reading the handler's certificate Secret");
                    continue;
                }
            };
            if self.current.read().unwrap_or_else(|e| e.into_inner()).0 == data {
                continue;
            }
            match server_config(&data) {
                Ok(config) => {
                    *self.current.write().unwrap_or_else(|e| e.into_inner()) = (data, config);
                    tracing::info!("the handler's certificates changed; new connections use them");
                }
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "the new handler certificates are not usable; keeping the old")
                }
            }
        }
    }
}

async fn read(
    client: &kube::Client,
    namespace: &str,
) -> Result<Option<BTreeMap<String, ByteString>>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    Ok(api
        .get_opt(SERVER_CERTS_SECRET)
        .await?
        .map(|s| s.data.unwrap_or_default()))
}

/// `tls.crt` + `tls.key` served; client certificates required, verified against `ca.crt`.
pub fn server_config(data: &BTreeMap<String, ByteString>) -> Result<Arc<rustls::ServerConfig>> {
    let field = |k: &'static str| {
        data.get(k)
            .map(|b| b.0.as_slice())
            .ok_or_else(|| Error::Certificate(format!("{SERVER_CERTS_SECRET} has no {k}")))
    };
    let pem_err = |k: &'static str| {
        move |e: rustls_pki_types::pem::Error| Error::Certificate(format!("{k}: {e}"))
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(field("tls.crt")?)
        .collect::<Result<_, _>>()
        .map_err(pem_err("tls.crt"))?;
    let key = PrivateKeyDer::from_pem_slice(field("tls.key")?).map_err(pem_err("tls.key"))?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(field("ca.crt")?) {
        roots.add(ca.map_err(pem_err("ca.crt"))?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::Certificate(format!("ca.crt: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

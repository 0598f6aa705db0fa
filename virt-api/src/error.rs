//! virt-api's one error type. Request-level refusals are not errors: they are
//! [`crate::status::Status`] answers; these are what stops the server or a request
//! from being served at all.

/// What can go wrong in virt-api.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading ConfigMap kube-system/extension-apiserver-authentication")]
    AuthConfigMap(#[source] kube::Error),
    #[error("ConfigMap kube-system/extension-apiserver-authentication has no {0}")]
    AuthConfigMissing(&'static str),
    #[error("{key} in extension-apiserver-authentication is not a JSON list of strings")]
    AuthConfigList {
        key: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("requestheader-client-ca-file holds no usable certificate")]
    RequestHeaderCa(#[source] rustls::server::VerifierBuilderError),
    #[error("reading PEM certificates")]
    Pem(#[source] rustls_pki_types::pem::Error),
    #[error("making the serving certificate")]
    Certificate(#[from] rcgen::Error),
    #[error("setting up TLS")]
    Tls(#[from] rustls::Error),
    #[error("binding {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("virt-handler certificates: {0}")]
    HandlerCerts(String),
    #[error("Kubernetes API")]
    Kube(#[from] kube::Error),
    #[error("runtime")]
    Runtime(#[from] runtime::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

//! The CA of the virt-api → virt-handler connection, and the certificates it signs.
//!
//! virt-api owns it (there is no virt-operator): at start and every
//! `--handler-cert-check-interval` (default [`CHECK`]) it makes sure that
//! - Secret [`CA_SECRET`] holds a CA (`tls.crt`, `tls.key`) and the bundle of CAs still
//!   trusted (`ca-bundle`: the current one and, after a rotation, the previous one until it
//!   expires). A CA with less than a fifth of its [`CA_VALIDITY`] left is replaced.
//! - Secret [`SERVER_CERTS_SECRET`] holds the handlers' serving certificate (for
//!   [`SERVER_NAME`], [`CERT_VALIDITY`]) signed by the current CA, and the bundle as
//!   `ca.crt`. It is re-issued when a fifth of its life is left or the CA changed. The
//!   handlers re-read it every 30 s.
//! - virt-api's own client certificate (in memory only, [`CERT_VALIDITY`]) is signed by
//!   a CA of the bundle: kept across a rotation while its CA is in the bundle (handlers
//!   trust the bundle they last read), else made anew from the current CA.
//!
//! Writes are guarded by resourceVersion, so replicas racing on a rotation agree on one
//! result. docs/virt-api.md, "virt-api → virt-handler".

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrovirt_node_contract::handler_api::{SERVER_CERTS_SECRET, SERVER_NAME};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Error, Result};

/// The CA Secret (KubeVirt's name), readable by virt-api only.
pub const CA_SECRET: &str = "kubevirt-ca";
/// Lifetime of a CA (KubeVirt's default: 7 days).
pub const CA_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Lifetime of the serving and client certificates (KubeVirt's default: 24 h).
pub const CERT_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// How often the certificates are checked by default (`--handler-cert-check-interval`).
pub const CHECK: Duration = Duration::from_secs(60);
/// The common name of virt-api's client certificate.
pub const CLIENT_NAME: &str = "kubevirt.io:system:client:virt-api";

/// A CA: its certificate and key, PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ca {
    pub cert: String,
    pub key: String,
}

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The handlers' serving certificate, for [`SERVER_NAME`].
    Server,
    /// virt-api's client certificate.
    Client,
}

fn now_secs(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64
}

fn validity(params: &mut CertificateParams, now: SystemTime, lifetime: Duration) -> Result<()> {
    let start = now_secs(now) - 60;
    let ts = |s: i64| {
        time::OffsetDateTime::from_unix_timestamp(s)
            .map_err(|e| Error::HandlerCerts(format!("time {s}: {e}")))
    };
    params.not_before = ts(start)?;
    params.not_after = ts(start + 60 + lifetime.as_secs() as i64)?;
    Ok(())
}

/// A new CA, named after the time it was made (as kube's `kube-ca@<time>`), so the CAs of
/// a bundle are told apart.
pub fn new_ca(now: SystemTime, lifetime: Duration) -> Result<Ca> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("ferrovirt-virt-handler-ca@{}", now_secs(now)),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, now, lifetime)?;
    let cert = params.self_signed(&key)?;
    Ok(Ca {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A certificate for `role` signed by `ca`: (certificate PEM, key PEM).
pub fn issue(ca: &Ca, role: Role, now: SystemTime, lifetime: Duration) -> Result<(String, String)> {
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, KeyPair::from_pem(&ca.key)?)?;
    let mut params = CertificateParams::default();
    validity(&mut params, now, lifetime)?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    match role {
        Role::Server => {
            params
                .distinguished_name
                .push(DnType::CommonName, SERVER_NAME);
            params.subject_alt_names = vec![SanType::DnsName(SERVER_NAME.try_into()?)];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        }
        Role::Client => {
            params
                .distinguished_name
                .push(DnType::CommonName, CLIENT_NAME);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
    }
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// (notBefore, notAfter, subject CN, issuer CN) of the first certificate of a PEM text.
fn facts(pem: &str) -> Option<(i64, i64, String, String)> {
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let cn = |n: &x509_parser::x509::X509Name| {
        n.iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let v = cert.validity();
    Some((
        v.not_before.timestamp(),
        v.not_after.timestamp(),
        cn(cert.subject()),
        cn(cert.issuer()),
    ))
}

/// Whether a certificate must be replaced: unreadable, or less than a fifth of its life
/// left at `now`.
pub fn due(pem: &str, now: SystemTime) -> bool {
    match facts(pem) {
        None => true,
        Some((from, to, _, _)) => {
            let left = to - now_secs(now);
            left * 5 < (to - from)
        }
    }
}

/// Whether `pem` was issued by `ca` (by name: each CA has its own).
pub fn issued_by(pem: &str, ca: &Ca) -> bool {
    match (facts(pem), facts(&ca.cert)) {
        (Some((_, _, _, issuer)), Some((_, _, subject, _))) => issuer == subject,
        _ => false,
    }
}

/// The bundle after a rotation from `old` to `new`: the new CA, then the old CAs that
/// have not expired.
pub fn bundle(new: &Ca, old_bundle: &str, now: SystemTime) -> String {
    let mut out = new.cert.clone();
    for der in CertificateDer::pem_slice_iter(old_bundle.as_bytes()).flatten() {
        let pem = pem_of(&der);
        if facts(&pem).is_some_and(|(_, to, cn, _)| {
            to > now_secs(now) && Some(cn) != facts(&new.cert).map(|f| f.2)
        }) {
            out.push_str(&pem);
        }
    }
    out
}

fn pem_of(der: &[u8]) -> String {
    let b64 = k8s_openapi::ByteString(der.to_vec());
    let text = serde_json::to_value(&b64)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn get(data: &BTreeMap<String, ByteString>, key: &str) -> String {
    data.get(key)
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

fn secret(name: &str, data: &[(&str, &str)], rv: Option<String>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            resource_version: rv,
            labels: Some([("kubevirt.io".to_string(), String::new())].into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// Creates or replaces (guarded by the resourceVersion read) a Secret. A lost race is
/// not an error: the next check reads the winner's.
async fn write(api: &Api<Secret>, s: Secret) -> Result<()> {
    let name = s.metadata.name.clone().unwrap_or_default();
    let res = if s.metadata.resource_version.is_some() {
        api.replace(&name, &PostParams::default(), &s)
            .await
            .map(|_| ())
    } else {
        api.create(&PostParams::default(), &s).await.map(|_| ())
    };
    match res {
        Ok(()) => {
            tracing::info!(secret = %name, "handler certificates written");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// One check: the CA and the handlers' certificate as they should be. Returns the CA and
/// the bundle now in force.
pub async fn reconcile(client: &Client, namespace: &str, now: SystemTime) -> Result<(Ca, String)> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    // The CA.
    let stored = api.get_opt(CA_SECRET).await?;
    let (ca, mut ca_bundle) = match &stored {
        Some(s) => {
            let d = s.data.clone().unwrap_or_default();
            let ca = Ca {
                cert: get(&d, "tls.crt"),
                key: get(&d, "tls.key"),
            };
            let b = get(&d, "ca-bundle");
            (ca, b)
        }
        None => (
            Ca {
                cert: String::new(),
                key: String::new(),
            },
            String::new(),
        ),
    };
    let ca = if stored.is_none() || due(&ca.cert, now) || KeyPair::from_pem(&ca.key).is_err() {
        let new = new_ca(now, CA_VALIDITY)?;
        let b = bundle(&new, &ca_bundle, now);
        tracing::info!(rotation = stored.is_some(), "making the virt-handler CA");
        let rv = stored
            .as_ref()
            .and_then(|s| s.metadata.resource_version.clone());
        write(
            &api,
            secret(
                CA_SECRET,
                &[
                    ("tls.crt", &new.cert),
                    ("tls.key", &new.key),
                    ("ca-bundle", &b),
                ],
                rv,
            ),
        )
        .await?;
        // Read back: a replica that won the race wrote its own.
        let d = api.get(CA_SECRET).await?.data.unwrap_or_default();
        ca_bundle = get(&d, "ca-bundle");
        Ca {
            cert: get(&d, "tls.crt"),
            key: get(&d, "tls.key"),
        }
    } else {
        ca
    };
    if ca_bundle.is_empty() {
        ca_bundle = ca.cert.clone();
    }
    // The handlers' serving certificate.
    let server = api.get_opt(SERVER_CERTS_SECRET).await?;
    let d = server
        .as_ref()
        .and_then(|s| s.data.clone())
        .unwrap_or_default();
    let cert = get(&d, "tls.crt");
    if server.is_none()
        || due(&cert, now)
        || !issued_by(&cert, &ca)
        || get(&d, "ca.crt") != ca_bundle
    {
        let (cert, key) = if server.is_some() && !due(&cert, now) && issued_by(&cert, &ca) {
            (cert, get(&d, "tls.key"))
        } else {
            issue(&ca, Role::Server, now, CERT_VALIDITY)?
        };
        let rv = server.and_then(|s| s.metadata.resource_version);
        write(
            &api,
            secret(
                SERVER_CERTS_SECRET,
                &[
                    ("tls.crt", &cert),
                    ("tls.key", &key),
                    ("ca.crt", &ca_bundle),
                ],
                rv,
            ),
        )
        .await?;
    }
    Ok((ca, ca_bundle))
}

/// The bundle a client configuration was made for, its certificate and key, and it.
type Current = (String, String, String, Arc<rustls::ClientConfig>);

/// virt-api's TLS client configuration for the handlers, kept current by [`keep`].
#[derive(Clone, Default)]
pub struct HandlerTls {
    current: Arc<RwLock<Option<Current>>>,
}

impl HandlerTls {
    /// The configuration, once the first check has made the certificates.
    pub fn config(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|c| c.3.clone())
    }

    /// Keeps the client certificate while it is fresh and its CA is still in the bundle
    /// (handlers trust the bundle they last read, which may not hold a new CA yet), else
    /// makes one from `ca`; the servers' roots follow the bundle.
    fn refresh(&self, ca: Ca, ca_bundle: String, now: SystemTime) -> Result<()> {
        let current = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let kept = current
            .as_ref()
            .filter(|(_, cert, _, _)| !due(cert, now) && issued_by_one_of(cert, &ca_bundle));
        if kept.is_some_and(|(b, _, _, _)| *b == ca_bundle) {
            return Ok(());
        }
        let (cert, key) = match kept {
            Some((_, cert, key, _)) => (cert.clone(), key.clone()),
            None => {
                tracing::info!("making virt-api's client certificate for virt-handler");
                issue(&ca, Role::Client, now, CERT_VALIDITY)?
            }
        };
        let config = client_config(&cert, &key, &ca_bundle)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) =
            Some((ca_bundle, cert, key, config));
        Ok(())
    }
}

/// Whether `pem` was issued by one of the CAs of `bundle`.
pub fn issued_by_one_of(pem: &str, bundle: &str) -> bool {
    CertificateDer::pem_slice_iter(bundle.as_bytes())
        .flatten()
        .any(|der| {
            issued_by(
                pem,
                &Ca {
                    cert: pem_of(&der),
                    key: String::new(),
                },
            )
        })
}

/// Client certificate `cert`/`key`; servers must chain to `ca_bundle`.
pub fn client_config(cert: &str, key: &str, ca_bundle: &str) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_bundle.as_bytes()) {
        roots.add(ca.map_err(Error::Pem)?)?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(Error::Pem)?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(Error::Pem)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Checks now and every `check`; failures are logged and retried (every 2 s).
pub async fn keep(client: Client, namespace: String, tls: HandlerTls, check: Duration) {
    let mut logged = false;
    loop {
        let now = SystemTime::now();
        let result = reconcile(&client, &namespace, now)
            .await
            .and_then(|(ca, b)| tls.refresh(ca, b, now));
        let pause = match result {
            Ok(()) => {
                logged = false;
                check
            }
            Err(e) => {
                if !logged {
                    tracing::warn!(error = %runtime::chain(&e), "handler certificates; retrying");
                    logged = true;
                }
                Duration::from_secs(2)
            }
        };
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_due_in_their_last_fifth_and_chain_to_their_ca() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ca = new_ca(t0, CA_VALIDITY).unwrap();
        assert!(!due(&ca.cert, t0));
        assert!(!due(&ca.cert, t0 + Duration::from_secs(5 * 24 * 3600)));
        assert!(due(&ca.cert, t0 + Duration::from_secs(6 * 24 * 3600)));
        let (server, key) = issue(&ca, Role::Server, t0, CERT_VALIDITY).unwrap();
        assert!(issued_by(&server, &ca));
        assert!(due(&server, t0 + Duration::from_secs(20 * 3600)));
        assert!(!due(&server, t0 + Duration::from_secs(3600)));
        let other = new_ca(t0 + Duration::from_secs(1), CA_VALIDITY).unwrap();
        assert!(!issued_by(&server, &other));
        // A client configuration from them is accepted by rustls.
        let (client, ckey) = issue(&ca, Role::Client, t0, CERT_VALIDITY).unwrap();
        client_config(&client, &ckey, &ca.cert).unwrap();
        assert!(key.contains("PRIVATE KEY"));
    }

    #[test]
    fn a_rotation_keeps_the_old_ca_in_the_bundle_until_it_expires() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let old = new_ca(t0, CA_VALIDITY).unwrap();
        let t1 = t0 + Duration::from_secs(6 * 24 * 3600);
        let new = new_ca(t1, CA_VALIDITY).unwrap();
        let b = bundle(&new, &old.cert, t1);
        assert_eq!(b.matches("BEGIN CERTIFICATE").count(), 2, "{b}");
        assert!(b.starts_with(&new.cert));
        // A client certificate of the old CA stays usable while the old CA is in the bundle.
        let (client, _) = issue(&old, Role::Client, t1, CERT_VALIDITY).unwrap();
        assert!(issued_by_one_of(&client, &b));
        assert!(!issued_by_one_of(&client, &new.cert));
        // Once the old one expired it is dropped; the new one is never listed twice.
        let later = t0 + CA_VALIDITY + Duration::from_secs(3600);
        let b2 = bundle(&new, &b, later);
        assert_eq!(b2, new.cert);
    }
}

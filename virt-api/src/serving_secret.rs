//! One serving certificate for every virt-api replica: the APIServices and webhook
//! configurations hold one `caBundle`, so replicas behind the one Service must present
//! certificates of the same CA. The first replica makes the CA and certificate and creates
//! the Secret `kubevirt-virt-api-certs` (KubeVirt's name) in its namespace; the others, and
//! later starts, read it. A Secret made for other names (`--service`, `--tls-san`) is
//! replaced, guarded by its resourceVersion, so two replicas racing keep the same pair.
//! Without the namespace or the permission, an instance uses a pair of its own (and says
//! so), which is enough for one replica.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::tls::{Serving, make_serving};
use crate::{Error, Result};

/// The Secret's name.
pub const SECRET: &str = "kubevirt-virt-api-certs";
/// The annotation that records the names the certificate was made for.
const NAMES_ANNOTATION: &str = "ferrovirt.io/names";

/// The shared serving certificate for `names`: read from the Secret, or made and stored.
pub async fn shared(client: &Client, namespace: &str, names: &[String]) -> Result<Serving> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let wanted = names.join(",");
    // A lost race (409) means another replica stored its pair: read that one.
    for _ in 0..5 {
        let stored = match api.get_opt(SECRET).await {
            Ok(stored) => stored,
            Err(kube::Error::Api(e)) if e.code == 403 || e.code == 404 => {
                return alone(names, &e.message);
            }
            Err(e) => return Err(Error::Kube(e)),
        };
        if let Some(serving) = stored.as_ref().and_then(|s| read(s, &wanted)) {
            tracing::info!(
                secret = SECRET,
                "serving certificate read from the shared Secret"
            );
            return Ok(serving);
        }
        let serving = make_serving(names)?;
        let secret = to_secret(
            &serving,
            &wanted,
            stored.and_then(|s| s.metadata.resource_version),
        );
        let written = if secret.metadata.resource_version.is_some() {
            api.replace(SECRET, &PostParams::default(), &secret).await
        } else {
            api.create(&PostParams::default(), &secret).await
        };
        match written {
            Ok(_) => {
                tracing::info!(secret = SECRET, names = %wanted, "serving certificate made and stored");
                return Ok(serving);
            }
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(kube::Error::Api(e)) if e.code == 403 || e.code == 404 => {
                return alone(names, &e.message);
            }
            Err(e) => return Err(Error::Kube(e)),
        }
    }
    Err(Error::Kube(kube::Error::Service(
        format!("the Secret {SECRET} kept changing while virt-api read it").into(),
    )))
}

/// A pair of this instance's own, when the Secret cannot be read or written (no namespace
/// yet, or no permission): one replica works with it; a second would present another CA.
fn alone(names: &[String], why: &str) -> Result<Serving> {
    tracing::warn!(
        secret = SECRET,
        error = why,
        "cannot share the serving certificate through the Secret; using one of this instance's own"
    );
    make_serving(names)
}

/// The pair a Secret holds, if it was made for `wanted` and reads back.
fn read(secret: &Secret, wanted: &str) -> Option<Serving> {
    let names = secret
        .metadata
        .annotations
        .as_ref()?
        .get(NAMES_ANNOTATION)?;
    if names != wanted {
        return None;
    }
    let data = secret.data.as_ref()?;
    let text = |key: &str| String::from_utf8(data.get(key)?.0.clone()).ok();
    Serving::from_pem(&text("ca.crt")?, &text("tls.crt")?, &text("tls.key")?).ok()
}

fn to_secret(serving: &Serving, names: &str, resource_version: Option<String>) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    Secret {
        metadata: ObjectMeta {
            name: Some(SECRET.into()),
            resource_version,
            annotations: Some(BTreeMap::from([(NAMES_ANNOTATION.into(), names.into())])),
            labels: Some(BTreeMap::from([("kubevirt.io".into(), "virt-api".into())])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("ca.crt".into(), bytes(&serving.ca_pem)),
            ("tls.crt".into(), bytes(&serving.cert_pem)),
            ("tls.key".into(), bytes(&serving.key_pem)),
        ])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_pair_reads_back_only_for_its_names() {
        let names = vec!["virt-api.kubevirt.svc".to_string()];
        let serving = make_serving(&names).unwrap();
        let secret = to_secret(&serving, &names.join(","), None);
        let back = read(&secret, "virt-api.kubevirt.svc").expect("reads back");
        assert_eq!(back.ca_pem, serving.ca_pem);
        assert_eq!(back.chain, serving.chain);
        assert!(read(&secret, "virt-api.other.svc").is_none());
    }
}

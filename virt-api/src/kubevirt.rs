//! The few kubevirt.io/v1 calls the subresources make, on raw JSON: the JSON patches test
//! the values exactly as stored, so nothing is lost by a typed round trip.

use kube::Client;
use serde_json::Value;

const BASE: &str = "/apis/kubevirt.io/v1/namespaces";

/// The object, or None when it does not exist.
pub async fn get(
    client: &Client,
    namespace: &str,
    resource: &str,
    name: &str,
) -> Result<Option<Value>, kube::Error> {
    let req = http::Request::get(format!("{BASE}/{namespace}/{resource}/{name}"))
        .body(Vec::new())
        .expect("a valid request");
    match client.request::<Value>(req).await {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// A JSON patch (`application/json-patch+json`) on the object or its `subresource`.
pub async fn json_patch(
    client: &Client,
    namespace: &str,
    resource: &str,
    name: &str,
    subresource: Option<&str>,
    ops: &[Value],
    dry_run: &[String],
) -> Result<(), kube::Error> {
    let mut path = format!("{BASE}/{namespace}/{resource}/{name}");
    if let Some(sub) = subresource {
        path.push('/');
        path.push_str(sub);
    }
    let query: Vec<String> = dry_run.iter().map(|d| format!("dryRun={d}")).collect();
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    let req = http::Request::patch(path)
        .header(http::header::CONTENT_TYPE, "application/json-patch+json")
        .body(serde_json::to_vec(ops).expect("JSON values serialize"))
        .expect("a valid request");
    client.request::<Value>(req).await.map(|_| ())
}

/// Whether a patch failed on one of its `test` operations (someone else wrote first).
/// kube-apiserver answers 422 with json-patch's message; KubeVirt matches an older text.
pub fn is_test_failure(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => {
            s.message
                .contains("jsonpatch test operation does not apply")
                || s.message.contains("test operation does not apply")
                || (s.code == 422 && s.message.contains("testing value"))
        }
        _ => false,
    }
}

/// The message of an API error, without kube's wrapping.
pub fn message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => runtime::chain(other),
    }
}

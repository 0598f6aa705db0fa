//! virt-api's admission webhooks registered in a test control plane, on top of the
//! aggregated virt-api of [`crate::aggregation`].
//!
//! The webhook configurations name virt-api by URL (`https://127.0.0.1:<port>/...`), so
//! no Service is needed; virt-api writes its CA into their `caBundle` itself, as it does
//! for the APIServices. With `failurePolicy: Fail`, every VM and VMI write then needs
//! virt-api: only test binaries that start virt-api register the webhooks (the shared
//! [`crate::ControlPlane`] does not).

use std::path::Path;
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use tokio::sync::OnceCell;

use crate::aggregation::{Cluster, VirtApi, shared_virt_api};
use crate::{ControlPlane, Error, Result};

/// The MutatingWebhookConfiguration (KubeVirt's name), virt-api's default.
pub const MUTATING: &str = "virt-api-mutator";
/// The ValidatingWebhookConfiguration (KubeVirt's name), virt-api's default.
pub const VALIDATING: &str = "virt-api-validator";
/// How long kube-apiserver waits for a webhook before the request fails.
pub const TIMEOUT_SECONDS: u32 = 5;
/// Each webhook: its name, the configuration it is in, the resource, the operations and
/// virt-api's path.
pub const WEBHOOKS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "virtualmachines-mutator.kubevirt.io",
        MUTATING,
        "virtualmachines",
        "CREATE",
        "/virtualmachines-mutate",
    ),
    (
        "virtualmachineinstances-mutator.kubevirt.io",
        MUTATING,
        "virtualmachineinstances",
        "CREATE",
        "/virtualmachineinstances-mutate",
    ),
    (
        "virtualmachine-validator.kubevirt.io",
        VALIDATING,
        "virtualmachines",
        "CREATE, UPDATE",
        "/virtualmachines-validate",
    ),
    (
        "virtualmachineinstances-create-validator.kubevirt.io",
        VALIDATING,
        "virtualmachineinstances",
        "CREATE",
        "/virtualmachineinstances-validate-create",
    ),
    (
        "virtualmachinereplicaset-validator.kubevirt.io",
        VALIDATING,
        "virtualmachineinstancereplicasets",
        "CREATE, UPDATE",
        "/virtualmachinereplicaset-validate",
    ),
    (
        "virtualmachinepool-validator.kubevirt.io",
        VALIDATING,
        "virtualmachinepools",
        "CREATE, UPDATE",
        "/virtualmachinepool-validate",
    ),
];

/// The API group and version of a webhook's resource.
pub fn group_version(resource: &str) -> (&'static str, &'static str) {
    match resource {
        "virtualmachinepools" => (crds::pool::GROUP, crds::pool::VERSION),
        _ => (crds::GROUP, crds::VERSION),
    }
}

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The two webhook configurations, pointing at `base_url` (`https://127.0.0.1:<port>`).
pub fn configurations(base_url: &str) -> String {
    let mut docs = Vec::new();
    for (config, kind) in [
        (MUTATING, "MutatingWebhookConfiguration"),
        (VALIDATING, "ValidatingWebhookConfiguration"),
    ] {
        let mut doc = format!(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: {kind}\nmetadata:\n  name: {config}\nwebhooks:\n"
        );
        for (name, _, resource, operations, path) in WEBHOOKS.iter().filter(|w| w.1 == config) {
            let (group, version) = group_version(resource);
            doc.push_str(&format!(
                "- name: {name}\n  admissionReviewVersions: [v1]\n  sideEffects: None\n  \
                 failurePolicy: Fail\n  timeoutSeconds: {TIMEOUT_SECONDS}\n  \
                 clientConfig:\n    url: {base_url}{path}\n  \
                 rules:\n  - apiGroups: [{group}]\n    apiVersions: [{version}]\n    \
                 operations: [{operations}]\n    resources: [{resource}]\n"
            ));
        }
        docs.push(doc);
    }
    docs.join("---\n")
}

static SHARED: OnceCell<std::result::Result<Duration, String>> = OnceCell::const_new();

/// The virt-api of this test binary with its webhooks registered and answering.
/// Panics with the reason when they cannot be made to work.
pub async fn shared_virt_api_with_webhooks() -> &'static VirtApi {
    let cp = crate::shared().await;
    let virt_api = shared_virt_api().await;
    let result = SHARED
        .get_or_init(|| async {
            register(cp, virt_api)
                .await
                .map_err(|e| crate::shared::error_chain(&e))
        })
        .await;
    if let Err(message) = result {
        panic!("virt-api's webhooks did not start answering: {message}");
    }
    virt_api
}

/// Registers the webhooks of the test's `virt_api` (see [`register_on`]).
pub async fn register(cp: &ControlPlane, virt_api: &VirtApi) -> Result<Duration> {
    register_on(
        &Cluster::of(cp),
        &cp.client().await?,
        virt_api.port,
        &virt_api.process.log,
    )
    .await
}

/// Applies the webhook configurations for a virt-api on loopback `port`
/// (the tests' or `hack/local-up.sh`'s), then waits until virt-api has written the
/// caBundle and kube-apiserver calls the validating webhook. Returns how long that took.
/// `log` is virt-api's log, quoted when it does not happen.
pub async fn register_on(
    cluster: &Cluster,
    client: &Client,
    port: u16,
    log: &Path,
) -> Result<Duration> {
    let started = Instant::now();
    // virt-api's permission to write their caBundle is in deploy/rbac, which
    // `aggregation::register` applied.
    cluster
        .apply(&configurations(&format!("https://127.0.0.1:{port}")))
        .await?;
    let failed = |reason: String| Error::Startup {
        component: "virt-api webhooks".into(),
        reason,
        tail: crate::control_plane::tail(log, 40),
        log: log.to_path_buf(),
    };
    wait_ca_bundles(client)
        .await?
        .map_err(|config| failed(format!("virt-api did not write the caBundle of {config}")))?;
    // A VMI only the webhook refuses, sent as a server-side dry run.
    let probe: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "webhook-probe"},
        "spec": {"domain": {"machine": {"type": "webhook-probe"},
                            "resources": {"requests": {"memory": "64Mi"}}}}
    }))
    .expect("the probe is a valid object");
    let gvk = GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachineInstance");
    let vmis: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &ApiResource::from_gvk(&gvk));
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let mut last = String::new();
    while started.elapsed() < READY_TIMEOUT {
        match vmis.create(&dry_run, &probe).await {
            Err(kube::Error::Api(s))
                if s.message
                    .contains("spec.domain.machine.type is not supported: webhook-probe") =>
            {
                let took = started.elapsed();
                tracing::info!(ms = took.as_millis() as u64, "virt-api's webhooks answer");
                return Ok(took);
            }
            Err(e) => last = crate::shared::error_chain(&e),
            Ok(_) => last = "the probe VMI was accepted".into(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(failed(format!(
        "the probe VMI was not refused by the webhook within {}s; last: {last}",
        READY_TIMEOUT.as_secs()
    )))
}

/// Waits until every webhook of both configurations has a caBundle; `Err(name)` of the
/// first configuration still without one after [`READY_TIMEOUT`].
async fn wait_ca_bundles(client: &Client) -> Result<std::result::Result<(), String>> {
    let started = Instant::now();
    for (config, kind) in [
        (MUTATING, "MutatingWebhookConfiguration"),
        (VALIDATING, "ValidatingWebhookConfiguration"),
    ] {
        let gvk = GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk));
        loop {
            let c = api.get(config).await?;
            let hooks = c.data["webhooks"].as_array().cloned().unwrap_or_default();
            let written = |h: &serde_json::Value| {
                h["clientConfig"]["caBundle"]
                    .as_str()
                    .is_some_and(|b| !b.is_empty())
            };
            if !hooks.is_empty() && hooks.iter().all(written) {
                break;
            }
            if started.elapsed() > READY_TIMEOUT {
                return Ok(Err(format!("{kind} {config}")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(Ok(()))
}

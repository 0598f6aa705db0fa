//! Ferrovirt's ValidatingAdmissionPolicies (`deploy/policies/*.yaml`): installed after the
//! CRDs, then checked to be in force. A policy whose CEL does not type-check is weaker than
//! it reads, and a new policy takes a moment to reach the admission plugin, so installing
//! waits until the API server reports no type-checking warning and has refused a dry-run
//! create that each policy must refuse.

use std::time::{Duration, Instant};

use crds::{VirtualMachine, VirtualMachineInstance};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde::Deserialize;

use crate::{Error, Result};

/// The policy files, in the order they are applied. The Helm chart installs the same files.
pub const POLICY_FILES: &[(&str, &str)] = &[
    (
        "deploy/policies/kubevirt-annotations.yaml",
        include_str!("../../deploy/policies/kubevirt-annotations.yaml"),
    ),
    (
        "deploy/policies/vmi-status.yaml",
        include_str!("../../deploy/policies/vmi-status.yaml"),
    ),
];

/// An annotation every policy of `kubevirt-annotations.yaml` refuses.
pub const UNIMPLEMENTED_ANNOTATION: &str = "hooks.kubevirt.io/hookSidecars";

const FIELD_MANAGER: &str = "ferrovirt-harness";
const POLICY_TIMEOUT: Duration = Duration::from_secs(60);
/// Where the dry-run probes are sent; it always exists.
const PROBE_NAMESPACE: &str = "default";

/// Server-side applies every policy and binding of [`POLICY_FILES`] and waits until each
/// policy is type-checked without warnings and enforced.
pub async fn install_admission_policies(client: &Client) -> Result<()> {
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = Vec::new();
    for (file, text) in POLICY_FILES {
        for document in serde_yaml::Deserializer::from_str(text) {
            let value =
                serde_json::Value::deserialize(document).map_err(|e| Error::PolicyRejected {
                    name: file.to_string(),
                    message: format!("not valid YAML: {e}"),
                })?;
            let kind = value["kind"].as_str().unwrap_or_default().to_string();
            let name = value["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let rejected = |e: kube::Error| Error::PolicyRejected {
                name: format!("{kind} {name} ({file})"),
                message: match Error::from(e) {
                    Error::Api { message, .. } => message,
                    other => other.to_string(),
                },
            };
            match kind.as_str() {
                "ValidatingAdmissionPolicy" => {
                    policies
                        .patch(&name, &params, &Patch::Apply(&value))
                        .await
                        .map_err(rejected)?;
                    names.push(name);
                }
                "ValidatingAdmissionPolicyBinding" => {
                    bindings
                        .patch(&name, &params, &Patch::Apply(&value))
                        .await
                        .map_err(rejected)?;
                }
                other => {
                    return Err(Error::PolicyRejected {
                        name: format!("{other} {name} ({file})"),
                        message: "only ValidatingAdmissionPolicy and its binding belong in deploy/policies/".into(),
                    });
                }
            }
        }
    }
    let started = Instant::now();
    for name in &names {
        wait_type_checked(&policies, name).await?;
    }
    let type_checked_ms = started.elapsed().as_millis() as u64;
    wait_enforced(client).await?;
    tracing::info!(
        policies = ?names,
        type_checked_ms,
        enforced_ms = started.elapsed().as_millis() as u64,
        "admission policies in force"
    );
    Ok(())
}

/// Waits for the API server's type check of `name` and fails on any warning.
async fn wait_type_checked(api: &Api<ValidatingAdmissionPolicy>, name: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        let policy = api.get(name).await?;
        let status = policy.status.clone().unwrap_or_default();
        if status.observed_generation.is_some()
            && status.observed_generation == policy.metadata.generation
        {
            let warnings = status
                .type_checking
                .and_then(|t| t.expression_warnings)
                .unwrap_or_default();
            if warnings.is_empty() {
                return Ok(());
            }
            let message = warnings
                .iter()
                .map(|w| format!("{}: {}", w.field_ref, w.warning))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(Error::PolicyRejected {
                name: policy.name_any(),
                message,
            });
        }
        if started.elapsed() > POLICY_TIMEOUT {
            return Err(Error::Timeout {
                what: format!("the type check of ValidatingAdmissionPolicy {name}"),
                seconds: POLICY_TIMEOUT.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls dry-run creates of a VM and a VMI carrying [`UNIMPLEMENTED_ANNOTATION`] until the
/// API server refuses both through the policies.
async fn wait_enforced(client: &Client) -> Result<()> {
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), PROBE_NAMESPACE);
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), PROBE_NAMESPACE);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let (vm, vmi) = probes();
    let started = Instant::now();
    loop {
        let vm_refused = refused_by_policy(vms.create(&dry_run, &vm).await);
        let vmi_refused = refused_by_policy(vmis.create(&dry_run, &vmi).await);
        if vm_refused && vmi_refused {
            return Ok(());
        }
        if started.elapsed() > POLICY_TIMEOUT {
            return Err(Error::Timeout {
                what: format!(
                    "the admission policies to refuse {UNIMPLEMENTED_ANNOTATION} (VM refused: {vm_refused}, VMI refused: {vmi_refused})"
                ),
                seconds: POLICY_TIMEOUT.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn refused_by_policy<T>(result: kube::Result<T>) -> bool {
    matches!(result, Err(kube::Error::Api(status))
        if status.message.contains("ValidatingAdmissionPolicy") && status.message.contains(UNIMPLEMENTED_ANNOTATION))
}

/// A VM and a VMI that are valid but for [`UNIMPLEMENTED_ANNOTATION`].
fn probes() -> (VirtualMachine, VirtualMachineInstance) {
    let annotations = std::collections::BTreeMap::from([(
        UNIMPLEMENTED_ANNOTATION.to_string(),
        "[]".to_string(),
    )]);
    let mut vmi = VirtualMachineInstance::new("ferrovirt-policy-probe", Default::default());
    vmi.metadata.annotations = Some(annotations.clone());
    let mut vm = VirtualMachine::new("ferrovirt-policy-probe", Default::default());
    vm.metadata.annotations = Some(annotations);
    (vm, vmi)
}

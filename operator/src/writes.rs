//! The API writes of both controllers, each with the field manager, a precondition
//! against lost updates, and a count in the metrics.
//!
//! The write policy (issue 7): a field another component writes too is written by
//! [`guarded`] JSON patches, whose first operation tests the resourceVersion it was
//! decided from, so a lost race is reread and decided again instead of overwriting: the
//! VMI's status (virt-handler writes its phase and conditions), the VM's status (virt-api
//! appends `stateChangeRequests`, which virt-controller removes once done) and the VM's
//! spec. The labels and annotations virt-controller owns alone are merge patches of those
//! keys only ([`merge_patch_metadata`]): a server-side apply of each under one field
//! manager would remove the keys the other applies left out. virt-handler, which owns the
//! fields it writes, applies them server-side and forced.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::{is_conflict, is_not_found, is_test_failed};
use crate::metrics::Metrics;
use crate::{Error, FIELD_MANAGER, Result};

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

fn key<K: Resource>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Replaces `status` of `obj` with `status`, only if nobody wrote `obj` since it was read
/// ([`guarded`]). A lost race is [`Error::Conflict`]: the caller rereads and decides
/// again.
pub async fn replace_status<K, S>(
    api: &Api<K>,
    obj: &K,
    status: &S,
    metrics: &Metrics,
    resource: &'static str,
) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    let ops = vec![json!({"op": "add", "path": "/status", "value": serde_json::to_value(status)?})];
    json_patch(api, obj, guarded(obj, ops), true, metrics, resource).await
}

/// JSON patch `ops` guarded for [`json_patch`]: a test of `obj`'s resourceVersion first, so
/// they apply only if nobody wrote `obj` since it was read (the write for fields another
/// component writes too; a lost race is [`Error::Conflict`]).
pub fn guarded<K: Resource>(obj: &K, ops: Vec<Value>) -> Vec<Value> {
    let rv = obj.resource_version().unwrap_or_default();
    let mut all = vec![json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv})];
    all.extend(ops);
    all
}

/// The JSON patch operation that sets label `key` of `obj` to `value` (adding the labels
/// when `obj` has none); for a patch [`guarded`] by the version `obj` was read at.
pub fn set_label<K: Resource>(obj: &K, key: &str, value: &str) -> Value {
    if obj.meta().labels.is_none() {
        json!({"op": "add", "path": "/metadata/labels", "value": {key: value}})
    } else {
        let escaped = key.replace('~', "~0").replace('/', "~1");
        json!({"op": "add", "path": format!("/metadata/labels/{escaped}"), "value": value})
    }
}

/// Applies JSON patch operations to `obj` (its status subresource when `status`); their own
/// `test` operations are their precondition.
pub async fn json_patch<K>(
    api: &Api<K>,
    obj: &K,
    ops: Vec<Value>,
    status: bool,
    metrics: &Metrics,
    resource: &'static str,
) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops))?;
    let p: Patch<()> = Patch::Json(patch);
    metrics.request("patch", resource);
    let name = obj.name_any();
    let result = if status {
        api.patch_status(&name, &params(), &p).await
    } else {
        api.patch(&name, &params(), &p).await
    };
    result.map_err(|e| {
        if is_conflict(&e) || is_test_failed(&e) || is_not_found(&e) {
            Error::Conflict(key(obj))
        } else {
            Error::FailedPatch(key(obj), e)
        }
    })
}

/// A merge patch of `obj`'s metadata (labels, annotations).
pub async fn merge_patch_metadata<K>(
    api: &Api<K>,
    obj: &K,
    patch: Value,
    metrics: &Metrics,
    resource: &'static str,
) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    metrics.request("patch", resource);
    api.patch(&obj.name_any(), &params(), &Patch::Merge(&patch))
        .await
        .map_err(|e| {
            if is_conflict(&e) || is_not_found(&e) {
                Error::Conflict(key(obj))
            } else {
                Error::FailedPatch(key(obj), e)
            }
        })
}

/// Creates `obj`. Ok(None) when an object of that name exists already.
pub async fn create<K>(
    api: &Api<K>,
    obj: &K,
    metrics: &Metrics,
    resource: &'static str,
) -> Result<Option<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    metrics.request("create", resource);
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api.create(&pp, obj).await {
        Ok(o) => Ok(Some(o)),
        Err(e) if crate::error::is_already_exists(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deletes `name` if it still has `uid`, with `grace` seconds (None: the object's own).
/// Ok(false) when it was gone already.
pub async fn delete<K>(
    api: &Api<K>,
    name: &str,
    uid: &str,
    grace: Option<u32>,
    metrics: &Metrics,
    resource: &'static str,
) -> Result<bool, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    metrics.request("delete", resource);
    let dp = DeleteParams {
        grace_period_seconds: grace,
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(true),
        // Gone, or a new object of the same name (the precondition failed).
        Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads `name` from the API server (when the cache may be behind).
pub async fn get<K>(
    api: &Api<K>,
    name: &str,
    metrics: &Metrics,
    resource: &'static str,
) -> Result<Option<K>>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    metrics.request("get", resource);
    Ok(api.get_opt(name).await?)
}

/// Adds `finalizer` to `obj` unless present, testing the list it was read with.
pub async fn add_finalizer<K>(
    api: &Api<K>,
    obj: &K,
    finalizer: &str,
    metrics: &Metrics,
    resource: &'static str,
) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    let ops = if obj.meta().finalizers.is_none() {
        vec![
            json!({"op": "test", "path": "/metadata/finalizers", "value": null}),
            json!({"op": "add", "path": "/metadata/finalizers", "value": [finalizer]}),
        ]
    } else {
        vec![
            json!({"op": "test", "path": "/metadata/finalizers", "value": obj.finalizers()}),
            json!({"op": "add", "path": "/metadata/finalizers/-", "value": finalizer}),
        ]
    };
    json_patch(api, obj, ops, false, metrics, resource).await
}

/// Removes `finalizer` from `obj`, testing the list it was read with.
pub async fn remove_finalizer<K>(
    api: &Api<K>,
    obj: &K,
    finalizer: &str,
    metrics: &Metrics,
    resource: &'static str,
) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    let Some(index) = obj.finalizers().iter().position(|f| f == finalizer) else {
        return Ok(());
    };
    let ops = vec![
        json!({"op": "test", "path": "/metadata/finalizers", "value": obj.finalizers()}),
        json!({"op": "remove", "path": format!("/metadata/finalizers/{index}")}),
    ];
    json_patch(api, obj, ops, false, metrics, resource)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guarded_patch_tests_the_version_it_was_decided_from_first() {
        let vm: crds::VirtualMachine = serde_json::from_value(json!({
            "metadata": {"name": "vm", "resourceVersion": "41"},
            "spec": {"template": {"spec": {"domain": {"devices": {}}}}}
        }))
        .unwrap();
        let ops = guarded(
            &vm,
            vec![json!({"op": "add", "path": "/status/stateChangeRequests", "value": []})],
        );
        assert_eq!(
            ops,
            vec![
                json!({"op": "test", "path": "/metadata/resourceVersion", "value": "41"}),
                json!({"op": "add", "path": "/status/stateChangeRequests", "value": []}),
            ]
        );
    }
}

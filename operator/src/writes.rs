//! The API writes of both controllers, each with the field manager, a precondition
//! against lost updates, and a count in the metrics.

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
/// (a JSON patch whose first operation tests the resourceVersion). A lost race is
/// [`Error::Conflict`]: the caller rereads and decides again.
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
    let rv = obj.resource_version().unwrap_or_default();
    let patch = vec![
        json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv}),
        json!({"op": "add", "path": "/status", "value": serde_json::to_value(status)?}),
    ];
    json_patch(api, obj, patch, true, metrics, resource).await
}

/// Applies JSON patch operations to `obj` (its status subresource when `status`).
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

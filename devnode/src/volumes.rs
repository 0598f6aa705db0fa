//! Pod volumes as host directories, bind-mounted by the shim at each mountPath.
//!
//! Supported: hostPath (with its type checks), emptyDir (a per-pod dir in the state dir;
//! medium Memory is a plain dir too), configMap, secret, downwardAPI (fieldRef items),
//! projected (configMap, secret, downwardAPI, serviceAccountToken) and
//! persistentVolumeClaim bound to a hostPath or local PersistentVolume. Files are written
//! when the pod starts and not refreshed afterwards. Anything else rejects the pod.

use crate::env::{Refs, field};
use crate::state::{Mount, PodDir};
use crate::{Ctx, Error, Result};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, PersistentVolume,
    PersistentVolumeClaim, Pod, Secret, ServiceAccount, Volume,
};
use kube::api::{Api, PostParams};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

const SUPPORTED: &str =
    "hostPath, emptyDir, configMap, secret, downwardAPI, projected, persistentVolumeClaim";

/// The kind of a volume source, as its field is named in the API.
fn kind(v: &Volume) -> String {
    let value = serde_json::to_value(v).unwrap_or_default();
    value
        .as_object()
        .and_then(|o| o.keys().find(|k| *k != "name").cloned())
        .unwrap_or_else(|| "unknown".into())
}

/// Rejects pods whose volumes devnode cannot provide, naming the volume and the field.
pub fn check(pod: &Pod) -> Result<()> {
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let k = kind(v);
        let unsupported = |what: String| {
            Err(Error::Unsupported(format!(
                "volume {:?}: {what} is not supported by devnode",
                v.name
            )))
        };
        match k.as_str() {
            "hostPath" | "emptyDir" | "configMap" | "secret" | "persistentVolumeClaim" => {}
            "downwardAPI" => check_downward(
                v.downward_api.as_ref().and_then(|d| d.items.as_deref()),
                &v.name,
            )?,
            "projected" => {
                for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
                    let value = serde_json::to_value(src).unwrap_or_default();
                    let name = value
                        .as_object()
                        .and_then(|o| o.keys().next().cloned())
                        .unwrap_or_default();
                    match name.as_str() {
                        "configMap" | "secret" | "serviceAccountToken" => {}
                        "downwardAPI" => check_downward(
                            src.downward_api.as_ref().and_then(|d| d.items.as_deref()),
                            &v.name,
                        )?,
                        other => return unsupported(format!("projected source {other}")),
                    }
                }
            }
            other => return unsupported(format!("{other} (devnode supports {SUPPORTED})")),
        }
    }
    Ok(())
}

fn check_downward(items: Option<&[DownwardAPIVolumeFile]>, volume: &str) -> Result<()> {
    match items.into_iter().flatten().find(|i| i.field_ref.is_none()) {
        Some(i) => Err(Error::Unsupported(format!(
            "volume {volume:?}: downwardAPI item {:?} without fieldRef (resourceFieldRef) is not supported by devnode",
            i.path
        ))),
        None => Ok(()),
    }
}

/// A file of a rendered volume: path relative to the volume, content, mode.
struct File {
    path: String,
    data: Vec<u8>,
    mode: u32,
}

/// Rejects paths that would leave the volume (absolute or with `..`).
fn relative(path: &str) -> Result<&str> {
    let p = Path::new(path);
    if p.components().all(|c| matches!(c, Component::Normal(_))) {
        Ok(path)
    } else {
        Err(Error::Invalid(format!(
            "path {path:?} must be relative and without '..'"
        )))
    }
}

fn keys(
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
    mode: u32,
    what: String,
    optional: bool,
) -> Result<Vec<File>> {
    let Some(data) = data else {
        return if optional {
            Ok(vec![])
        } else {
            Err(Error::ContainerConfig(format!("{what} not found")))
        };
    };
    match items {
        None => Ok(data
            .into_iter()
            .map(|(k, v)| File {
                path: k,
                data: v,
                mode,
            })
            .collect()),
        Some(items) => items
            .iter()
            .filter_map(|i| match data.get(&i.key) {
                Some(v) => Some(Ok(File {
                    path: i.path.clone(),
                    data: v.clone(),
                    mode: i.mode.map(|m| m as u32).unwrap_or(mode),
                })),
                None if optional => None,
                None => Some(Err(Error::ContainerConfig(format!(
                    "key {:?} of {what} not found",
                    i.key
                )))),
            })
            .collect(),
    }
}

fn downward(
    pod: &Pod,
    items: Option<&[DownwardAPIVolumeFile]>,
    mode: u32,
    node: &str,
) -> Result<Vec<File>> {
    items
        .into_iter()
        .flatten()
        .filter_map(|i| i.field_ref.as_ref().map(|f| (i, f)))
        .map(|(i, f)| {
            Ok(File {
                path: i.path.clone(),
                data: field(pod, &f.field_path, node)?.into_bytes(),
                mode: i.mode.map(|m| m as u32).unwrap_or(mode),
            })
        })
        .collect()
}

async fn fetch_refs(
    ctx: &Ctx,
    ns: &str,
    cms: impl Iterator<Item = String>,
    secrets: impl Iterator<Item = String>,
) -> Result<Refs> {
    let mut refs = Refs::default();
    let cm_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let secret_api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    for name in cms {
        if let Some(cm) = cm_api.get_opt(&name).await? {
            refs.config_maps.insert(name, cm);
        }
    }
    for name in secrets {
        if let Some(s) = secret_api.get_opt(&name).await? {
            refs.secrets.insert(name, s);
        }
    }
    Ok(refs)
}

/// The ConfigMaps and Secrets a pod's env and volumes name, fetched from its namespace.
pub async fn refs(ctx: &Ctx, pod: &Pod) -> Result<Refs> {
    let spec = pod.spec.as_ref();
    let (mut cms, mut secrets) = (Vec::new(), Vec::new());
    for c in spec.iter().flat_map(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(s.containers.iter())
    }) {
        let (a, b) = crate::env::referenced(c);
        cms.extend(a);
        secrets.extend(b);
    }
    for v in spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        cms.extend(v.config_map.as_ref().map(|c| c.name.clone()));
        secrets.extend(v.secret.as_ref().and_then(|s| s.secret_name.clone()));
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            cms.extend(src.config_map.as_ref().map(|c| c.name.clone()));
            secrets.extend(src.secret.as_ref().map(|s| s.name.clone()));
        }
    }
    cms.sort();
    cms.dedup();
    secrets.sort();
    secrets.dedup();
    fetch_refs(
        ctx,
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        cms.into_iter(),
        secrets.into_iter(),
    )
    .await
}

async fn token(
    ctx: &Ctx,
    pod: &Pod,
    audience: Option<String>,
    expiration: Option<i64>,
) -> Result<Vec<u8>> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), ns);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.into_iter().collect(),
            expiration_seconds: Some(expiration.unwrap_or(3600)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let resp = api
        .create_token_request(&sa, &PostParams::default(), &req)
        .await?;
    Ok(resp
        .status
        .map(|s| s.token)
        .unwrap_or_default()
        .into_bytes())
}

async fn files(ctx: &Ctx, pod: &Pod, v: &Volume, refs: &Refs) -> Result<Vec<File>> {
    let node = &ctx.node_name;
    if let Some(c) = &v.config_map {
        let mode = c.default_mode.unwrap_or(0o644) as u32;
        return keys(
            refs.config_map_data(&c.name),
            c.items.as_deref(),
            mode,
            format!("configmap {:?}", c.name),
            c.optional == Some(true),
        );
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let mode = s.default_mode.unwrap_or(0o644) as u32;
        return keys(
            refs.secret_data(&name),
            s.items.as_deref(),
            mode,
            format!("secret {name:?}"),
            s.optional == Some(true),
        );
    }
    if let Some(d) = &v.downward_api {
        return downward(
            pod,
            d.items.as_deref(),
            d.default_mode.unwrap_or(0o644) as u32,
            node,
        );
    }
    let mut out = Vec::new();
    if let Some(p) = &v.projected {
        let mode = p.default_mode.unwrap_or(0o644) as u32;
        for src in p.sources.iter().flatten() {
            if let Some(c) = &src.config_map {
                out.extend(keys(
                    refs.config_map_data(&c.name),
                    c.items.as_deref(),
                    mode,
                    format!("configmap {:?}", c.name),
                    c.optional == Some(true),
                )?);
            }
            if let Some(s) = &src.secret {
                out.extend(keys(
                    refs.secret_data(&s.name),
                    s.items.as_deref(),
                    mode,
                    format!("secret {:?}", s.name),
                    s.optional == Some(true),
                )?);
            }
            if let Some(d) = &src.downward_api {
                out.extend(downward(pod, d.items.as_deref(), mode, node)?);
            }
            if let Some(t) = &src.service_account_token {
                let data = token(ctx, pod, t.audience.clone(), t.expiration_seconds).await?;
                out.push(File {
                    path: t.path.clone(),
                    data,
                    mode: 0o600.min(mode) | 0o400,
                });
            }
        }
    }
    Ok(out)
}

/// Writes files in place (the directory itself is kept: running containers have it mounted).
fn write_files(root: &Path, files: Vec<File>) -> Result<()> {
    for f in files {
        let path = root.join(relative(&f.path)?);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(Error::io(format!("create {}", parent.display())))?;
        }
        std::fs::write(&path, &f.data).map_err(Error::io(format!("write {}", path.display())))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))
            .map_err(Error::io(format!("chmod {}", path.display())))?;
    }
    Ok(())
}

fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(Error::io(format!("create {}", path.display())))
}

/// Checks (or creates) a hostPath as its `type` asks.
pub fn host_path(path: &Path, kind: &str) -> Result<()> {
    let meta = std::fs::metadata(path);
    let wrong = |what: &str| {
        Err(Error::Invalid(format!(
            "hostPath {} is not {what}",
            path.display()
        )))
    };
    match (kind, &meta) {
        ("", _) => Ok(()),
        ("DirectoryOrCreate", Err(_)) => mkdir(path),
        ("FileOrCreate", Err(_)) => {
            if let Some(p) = path.parent() {
                mkdir(p)?;
            }
            std::fs::File::create(path)
                .map(|_| ())
                .map_err(Error::io(format!("create {}", path.display())))
        }
        (_, Err(e)) => Err(Error::Invalid(format!(
            "hostPath {} ({kind}): {e}",
            path.display()
        ))),
        ("Directory" | "DirectoryOrCreate", Ok(m)) if !m.is_dir() => wrong("a directory"),
        ("File" | "FileOrCreate", Ok(m)) if !m.is_file() => wrong("a file"),
        ("Socket", Ok(m)) if !m.file_type().is_socket() => wrong("a socket"),
        ("CharDevice", Ok(m)) if !m.file_type().is_char_device() => wrong("a character device"),
        ("BlockDevice", Ok(m)) if !m.file_type().is_block_device() => wrong("a block device"),
        _ => Ok(()),
    }
}

async fn claim_path(ctx: &Ctx, ns: &str, claim: &str) -> Result<PathBuf> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let pvc = pvcs
        .get_opt(claim)
        .await?
        .ok_or_else(|| Error::Invalid(format!("persistentVolumeClaim {claim:?} not found")))?;
    let pv_name = pvc
        .spec
        .and_then(|s| s.volume_name)
        .filter(|n| !n.is_empty());
    let pv_name = pv_name.ok_or_else(|| {
        Error::Invalid(format!("persistentVolumeClaim {claim:?} is not bound yet"))
    })?;
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let spec = pvs.get(&pv_name).await?.spec.unwrap_or_default();
    if let Some(h) = spec.host_path {
        host_path(Path::new(&h.path), h.type_.as_deref().unwrap_or(""))?;
        return Ok(PathBuf::from(h.path));
    }
    if let Some(l) = spec.local {
        return Ok(PathBuf::from(l.path));
    }
    Err(Error::Unsupported(format!(
        "persistentVolume {pv_name:?}: devnode mounts only hostPath and local volumes"
    )))
}

/// kubelet's message for a volume it cannot set up (`MountVolume.SetUp failed for volume
/// "NAME" : secret "S" not found`), for a volume's error from [`prepare`]; `None` for any
/// other error.
pub fn failed_mount_message(e: &Error) -> Option<String> {
    match e {
        Error::Volume(name, source) => Some(format!(
            "MountVolume.SetUp failed for volume {name:?} : {}",
            crate::chain(source.as_ref())
        )),
        _ => None,
    }
}

/// Posts kubelet's Warning Event `FailedMount` with `message` on the pod, where
/// `kubectl describe pod` shows it and virt-controller finds a missing cloud-init Secret.
pub async fn failed_mount_event(ctx: &Ctx, pod: &Pod, message: &str) -> Result<()> {
    use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}.")),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name),
            namespace: Some(ns.clone()),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        reason: Some("FailedMount".into()),
        message: Some(message.into()),
        type_: Some("Warning".into()),
        source: Some(EventSource {
            component: Some("devnode".into()),
            host: Some(ctx.node_name.clone()),
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        reporting_component: Some("devnode".into()),
        reporting_instance: Some(ctx.node_name.clone()),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), &ns);
    api.create(&PostParams::default(), &event).await?;
    Ok(())
}

/// Sets up every volume of the pod on the host: volume name → host path.
pub async fn prepare(
    ctx: &Ctx,
    pod: &Pod,
    dir: &PodDir,
    refs: &Refs,
) -> Result<HashMap<String, PathBuf>> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = HashMap::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let wrap = |e: Error| Error::Volume(v.name.clone(), Box::new(e));
        let path = if let Some(h) = &v.host_path {
            host_path(Path::new(&h.path), h.type_.as_deref().unwrap_or("")).map_err(wrap)?;
            PathBuf::from(&h.path)
        } else if let Some(c) = &v.persistent_volume_claim {
            claim_path(ctx, ns, &c.claim_name).await.map_err(wrap)?
        } else {
            let root = dir.volume(&v.name);
            mkdir(&root).map_err(wrap)?;
            if v.empty_dir.is_some() {
                // World-writable, as kubelet makes an emptyDir: containers of any user
                // (the launcher pod's run as uid 107) write into it.
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777))
                    .map_err(|e| wrap(Error::io(format!("chmod {}", root.display()))(e)))?;
            } else {
                let f = files(ctx, pod, v, refs).await.map_err(wrap)?;
                write_files(&root, f).map_err(wrap)?;
            }
            root
        };
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

/// The bind mounts of one container, parents before children. `subPathExpr` is expanded
/// with the container's environment.
pub fn mounts(
    c: &Container,
    volumes: &HashMap<String, PathBuf>,
    env: &HashMap<String, String>,
) -> Result<Vec<Mount>> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let source = volumes.get(&m.name).ok_or_else(|| {
            Error::Invalid(format!("volumeMount {:?}: no volume of that name", m.name))
        })?;
        let sub = match (&m.sub_path, &m.sub_path_expr) {
            (Some(p), _) if !p.is_empty() => Some(p.clone()),
            (_, Some(e)) if !e.is_empty() => Some(crate::env::expand(e, env)),
            _ => None,
        };
        let source = match sub {
            Some(sub) => {
                let s = source.join(relative(&sub)?);
                if !s.exists() {
                    mkdir(&s)?;
                }
                s
            }
            None => source.clone(),
        };
        out.push(Mount {
            source,
            target: PathBuf::from(&m.mount_path),
            read_only: m.read_only == Some(true),
        });
    }
    out.sort_by_key(|m| m.target.components().count());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(volumes: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [], "volumes": volumes}}),
        )
        .unwrap()
    }

    #[test]
    fn unsupported_volumes_are_named() {
        assert!(
            check(&pod(
                json!([{"name": "a", "hostPath": {"path": "/x"}}, {"name": "b", "emptyDir": {}}])
            ))
            .is_ok()
        );
        let e = check(&pod(
            json!([{"name": "n", "nfs": {"server": "s", "path": "/"}}]),
        ))
        .unwrap_err();
        assert!(
            e.to_string().contains("\"n\"") && e.to_string().contains("nfs"),
            "{e}"
        );
        let e = check(&pod(json!([{"name": "d", "downwardAPI": {"items": [
            {"path": "cpu", "resourceFieldRef": {"resource": "limits.cpu"}}]}}])))
        .unwrap_err();
        assert!(e.to_string().contains("resourceFieldRef"), "{e}");
    }

    #[test]
    fn a_volume_that_cannot_be_set_up_reads_as_kubelets_failed_mount() {
        let e = Error::Volume(
            "cloudinit-1-userdata".into(),
            Box::new(Error::ContainerConfig("secret \"ud\" not found".into())),
        );
        assert_eq!(
            failed_mount_message(&e).as_deref(),
            Some(
                "MountVolume.SetUp failed for volume \"cloudinit-1-userdata\" : secret \"ud\" not found"
            )
        );
        assert_eq!(failed_mount_message(&Error::Invalid("x".into())), None);
    }

    #[test]
    fn host_path_types() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("a/b");
        assert!(host_path(&d, "Directory").is_err());
        host_path(&d, "DirectoryOrCreate").unwrap();
        assert!(d.is_dir());
        assert!(host_path(&d, "File").is_err());
        let f = tmp.path().join("c/f");
        host_path(&f, "FileOrCreate").unwrap();
        host_path(&f, "File").unwrap();
        assert!(host_path(&f, "Socket").is_err());
    }

    #[test]
    fn mounts_map_volumes_and_sub_paths_in_depth_order() {
        let tmp = tempfile::tempdir().unwrap();
        let c: Container = serde_json::from_value(json!({"name": "c", "volumeMounts": [
            {"name": "v", "mountPath": "/a/b/c", "subPathExpr": "$(POD)"},
            {"name": "v", "mountPath": "/a", "readOnly": true},
        ]}))
        .unwrap();
        let vols = HashMap::from([("v".to_string(), tmp.path().to_path_buf())]);
        let env = HashMap::from([("POD".to_string(), "p1".to_string())]);
        let m = mounts(&c, &vols, &env).unwrap();
        assert_eq!(
            m[0],
            Mount {
                source: tmp.path().into(),
                target: "/a".into(),
                read_only: true
            }
        );
        assert_eq!(m[1].source, tmp.path().join("p1"));
        assert!(tmp.path().join("p1").is_dir());
        assert!(relative("../x").is_err());
    }
}

//! A container's environment, as kubelet builds it: service variables for the API server,
//! `envFrom`, then `env` (values with `$(VAR)` references expanded, `valueFrom` resolved
//! from the pod's fields, ConfigMaps and Secrets).
//!
//! Pods share the host's network, so the pod IP is 127.0.0.1 and `KUBERNETES_SERVICE_*`
//! point at the API server's real address (there is no kube-proxy).

use crate::{Error, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use std::collections::{BTreeMap, BTreeSet, HashMap};

pub const POD_IP: &str = "127.0.0.1";
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// ConfigMaps and Secrets of the pod's namespace that env and volumes refer to, fetched
/// beforehand; a missing one is absent.
#[derive(Default, Debug)]
pub struct Refs {
    pub config_maps: HashMap<String, ConfigMap>,
    pub secrets: HashMap<String, Secret>,
}

impl Refs {
    pub fn config_map_data(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let cm = self.config_maps.get(name)?;
        let mut out: BTreeMap<String, Vec<u8>> = cm
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        out.extend(
            cm.binary_data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone())),
        );
        Some(out)
    }
    pub fn secret_data(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let s = self.secrets.get(name)?;
        let mut out: BTreeMap<String, Vec<u8>> = s
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        out.extend(
            s.string_data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone().into_bytes())),
        );
        Some(out)
    }
}

/// Names of the ConfigMaps and Secrets a container's env refers to.
pub fn referenced(c: &Container) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut cms, mut secrets) = (BTreeSet::new(), BTreeSet::new());
    for from in c.env_from.iter().flatten() {
        cms.extend(from.config_map_ref.as_ref().map(|r| r.name.clone()));
        secrets.extend(from.secret_ref.as_ref().map(|r| r.name.clone()));
    }
    for var in c.env.iter().flatten() {
        if let Some(from) = &var.value_from {
            cms.extend(from.config_map_key_ref.as_ref().map(|r| r.name.clone()));
            secrets.extend(from.secret_key_ref.as_ref().map(|r| r.name.clone()));
        }
    }
    (cms, secrets)
}

/// A pod field as `fieldRef.fieldPath` names it (env and downwardAPI volumes).
pub fn field(pod: &Pod, path: &str, node_name: &str) -> Result<String> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    let keyed = |prefix: &str, map: &Option<BTreeMap<String, String>>| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(
            map.as_ref()
                .and_then(|m| m.get(key))
                .cloned()
                .unwrap_or_default(),
        )
    };
    let all = |map: &Option<BTreeMap<String, String>>| -> String {
        map.iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v:?}\n"))
            .collect()
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => all(&m.labels),
        "metadata.annotations" => all(&m.annotations),
        "spec.nodeName" => node_name.to_string(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" | "status.hostIP" | "status.hostIPs" => POD_IP.to_string(),
        _ => keyed("metadata.labels['", &m.labels)
            .or_else(|| keyed("metadata.annotations['", &m.annotations))
            .ok_or_else(|| {
                Error::Unsupported(format!("fieldRef {path:?} is not supported by devnode"))
            })?,
    })
}

/// Expands `$(VAR)` with the variables defined so far; `$$(VAR)` escapes it and an unknown
/// `$(VAR)` stays as written, as Kubernetes does.
pub fn expand(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 1..];
        if let Some(t) = tail.strip_prefix('$') {
            out.push('$');
            rest = t;
        } else if let Some(inner) = tail.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// Where in-cluster clients find the API server.
pub struct Service<'a> {
    pub host: &'a str,
    pub port: u16,
}

/// The container's environment, in order (later entries win, as kubelet's do).
pub fn resolve(
    pod: &Pod,
    c: &Container,
    refs: &Refs,
    node_name: &str,
    api: &Service,
) -> Result<Vec<(String, String)>> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut map: HashMap<String, String> = HashMap::new();
    let set = |vars: &mut Vec<(String, String)>,
               map: &mut HashMap<String, String>,
               k: String,
               v: String| {
        vars.retain(|(n, _)| *n != k);
        map.insert(k.clone(), v.clone());
        vars.push((k, v));
    };
    let (h, p) = (api.host, api.port);
    for (k, v) in [
        ("PATH", DEFAULT_PATH.to_string()),
        ("HOSTNAME", hostname(pod)),
        ("KUBERNETES_SERVICE_HOST", h.to_string()),
        ("KUBERNETES_SERVICE_PORT", p.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS", p.to_string()),
        ("KUBERNETES_PORT", format!("tcp://{h}:{p}")),
        ("KUBERNETES_PORT_443_TCP", format!("tcp://{h}:{p}")),
        ("KUBERNETES_PORT_443_TCP_PROTO", "tcp".into()),
        ("KUBERNETES_PORT_443_TCP_ADDR", h.to_string()),
        ("KUBERNETES_PORT_443_TCP_PORT", p.to_string()),
    ] {
        set(&mut vars, &mut map, k.to_string(), v);
    }
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, what, name, optional) = if let Some(r) = &from.config_map_ref {
            (
                refs.config_map_data(&r.name),
                "configmap",
                &r.name,
                r.optional,
            )
        } else if let Some(r) = &from.secret_ref {
            (refs.secret_data(&r.name), "secret", &r.name, r.optional)
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (k, v) in data {
                    set(
                        &mut vars,
                        &mut map,
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v).into_owned(),
                    );
                }
            }
            None if optional == Some(true) => {}
            None => return Err(Error::ContainerConfig(format!("{what} {name:?} not found"))),
        }
    }
    for var in c.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    Some(field(pod, &f.field_path, node_name)?)
                } else if let Some(r) = &from.config_map_key_ref {
                    key(
                        refs.config_map_data(&r.name),
                        "configmap",
                        &r.name,
                        &r.key,
                        r.optional,
                    )?
                } else if let Some(r) = &from.secret_key_ref {
                    key(
                        refs.secret_data(&r.name),
                        "secret",
                        &r.name,
                        &r.key,
                        r.optional,
                    )?
                } else {
                    return Err(Error::Unsupported(format!(
                        "env {}: only fieldRef, configMapKeyRef and secretKeyRef are supported by devnode",
                        var.name
                    )));
                }
            }
            (Some(v), None) => Some(expand(v, &map)),
            (None, None) => Some(String::new()),
        };
        if let Some(v) = value {
            set(&mut vars, &mut map, var.name.clone(), v);
        }
    }
    Ok(vars)
}

fn key(
    data: Option<BTreeMap<String, Vec<u8>>>,
    what: &str,
    name: &str,
    key: &str,
    optional: Option<bool>,
) -> Result<Option<String>> {
    match data.as_ref().and_then(|d| d.get(key)) {
        Some(v) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
        None if optional == Some(true) => Ok(None),
        None => Err(Error::ContainerConfig(format!(
            "key {key:?} of {what} {name:?} not found"
        ))),
    }
}

/// The pod's hostname: spec.hostname, else its name (at most 63 characters).
pub fn hostname(pod: &Pod) -> String {
    let h = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    h.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches(['-', '.'])
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapKeySelector, EnvVar, EnvVarSource, ObjectFieldSelector,
    };
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c"}], "serviceAccountName": "sa"}
        }))
        .unwrap()
    }

    fn from_field(name: &str, path: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn get<'a>(vars: &'a [(String, String)], k: &str) -> Option<&'a str> {
        vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    const API: Service = Service {
        host: "127.0.0.1",
        port: 6443,
    };

    #[test]
    fn field_refs_and_expansion() {
        let c = Container {
            name: "c".into(),
            env: Some(vec![
                from_field("NAME", "metadata.name"),
                from_field("NS", "metadata.namespace"),
                from_field("UID", "metadata.uid"),
                from_field("IP", "status.podIP"),
                from_field("NODE", "spec.nodeName"),
                from_field("APP", "metadata.labels['app']"),
                EnvVar {
                    name: "BOTH".into(),
                    value: Some("$(NS)/$(NAME) $$(NS) $(NOPE)".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let vars = resolve(&pod(), &c, &Refs::default(), "node1", &API).unwrap();
        assert_eq!(get(&vars, "NAME"), Some("p"));
        assert_eq!(get(&vars, "NS"), Some("ns"));
        assert_eq!(get(&vars, "UID"), Some("u-1"));
        assert_eq!(get(&vars, "IP"), Some("127.0.0.1"));
        assert_eq!(get(&vars, "NODE"), Some("node1"));
        assert_eq!(get(&vars, "APP"), Some("x"));
        assert_eq!(get(&vars, "BOTH"), Some("ns/p $(NS) $(NOPE)"));
        assert_eq!(get(&vars, "KUBERNETES_SERVICE_PORT"), Some("6443"));
        assert_eq!(get(&vars, "HOSTNAME"), Some("p"));
    }

    #[test]
    fn missing_config_map_key_is_a_config_error_unless_optional() {
        let var = |optional| EnvVar {
            name: "V".into(),
            value_from: Some(EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: "cm".into(),
                    key: "k".into(),
                    optional,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let c = Container {
            name: "c".into(),
            env: Some(vec![var(None)]),
            ..Default::default()
        };
        let e = resolve(&pod(), &c, &Refs::default(), "n", &API).unwrap_err();
        assert!(matches!(e, Error::ContainerConfig(_)), "{e}");
        let c = Container {
            name: "c".into(),
            env: Some(vec![var(Some(true))]),
            ..Default::default()
        };
        let vars = resolve(&pod(), &c, &Refs::default(), "n", &API).unwrap();
        assert_eq!(get(&vars, "V"), None);

        let mut refs = Refs::default();
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "cm"}, "data": {"k": "v"}}))
                .unwrap();
        refs.config_maps.insert("cm".into(), cm);
        let c = Container {
            name: "c".into(),
            env: Some(vec![var(None)]),
            ..Default::default()
        };
        assert_eq!(
            get(&resolve(&pod(), &c, &refs, "n", &API).unwrap(), "V"),
            Some("v")
        );
    }

    #[test]
    fn unknown_field_path_is_unsupported() {
        let c = Container {
            name: "c".into(),
            env: Some(vec![from_field("X", "spec.schedulerName")]),
            ..Default::default()
        };
        assert!(matches!(
            resolve(&pod(), &c, &Refs::default(), "n", &API),
            Err(Error::Unsupported(_))
        ));
    }
}

//! `ferroctl expose vm|vmi NAME --port P --name SVC`: a Service for a VM's guest, as
//! KubeVirt's `virtctl expose` makes it: selecting the launcher pod by its
//! `vmi.kubevirt.io/id` label, owned (not blocking deletion) by the VM or VMI, its ports
//! from the flags or else from the pod-network interface's `ports`.

use ferrovirt_node_contract::pod::{VMI_ID_LABEL, vmi_id};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ObjectMeta, PostParams};
use serde_json::Value;

use crate::cli::{ExposeFlags, ResourceKind};
use crate::{Error, Result};

pub async fn run(
    client: &kube::Client,
    namespace: &str,
    kind: ResourceKind,
    name: &str,
    flags: &ExposeFlags,
) -> Result<()> {
    let kind_name = match kind {
        ResourceKind::Vm => "VirtualMachine",
        ResourceKind::Vmi => "VirtualMachineInstance",
    };
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("kubevirt.io", "v1", kind_name));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let object = api.get(name).await?;
    let spec = match kind {
        ResourceKind::Vm => &object.data["spec"]["template"]["spec"],
        ResourceKind::Vmi => &object.data["spec"],
    };
    let service = service(kind_name, &object, spec, flags)?;
    Api::<Service>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &service)
        .await?;
    let what = match kind {
        ResourceKind::Vm => "vm",
        ResourceKind::Vmi => "vmi",
    };
    println!(
        "Service {} successfully exposed for {what} {name}",
        flags.service_name
    );
    Ok(())
}

/// The Service, as a pure function of the object and the flags.
pub fn service(
    kind: &str,
    object: &DynamicObject,
    spec: &Value,
    flags: &ExposeFlags,
) -> Result<Service> {
    let name = object.metadata.name.clone().unwrap_or_default();
    let protocol = match flags.protocol.to_ascii_lowercase().as_str() {
        "tcp" => "TCP",
        "udp" => "UDP",
        "sctp" => "SCTP",
        _ => {
            return Err(Error::Usage(format!(
                "unknown protocol: {}",
                flags.protocol
            )));
        }
    };
    let service_type = match flags.r#type.to_ascii_lowercase().as_str() {
        "clusterip" => "ClusterIP",
        "nodeport" => "NodePort",
        "loadbalancer" => "LoadBalancer",
        "externalname" => return Err(Error::Usage("type: ExternalName not supported".into())),
        _ => {
            return Err(Error::Usage(format!(
                "unknown service type: {}",
                flags.r#type
            )));
        }
    };
    let ports = match flags.port {
        Some(port) => vec![ServicePort {
            name: flags.port_name.clone(),
            protocol: Some(protocol.into()),
            port,
            target_port: flags
                .target_port
                .as_deref()
                .map(|t| match t.parse::<i32>() {
                    Ok(n) => IntOrString::Int(n),
                    Err(_) => IntOrString::String(t.to_owned()),
                }),
            ..Default::default()
        }],
        None => pod_network_ports(spec),
    };
    if ports.is_empty() {
        return Err(Error::Usage(
            "couldn't find port via --port flag or introspection".into(),
        ));
    }
    let owner = OwnerReference {
        api_version: "kubevirt.io/v1".into(),
        kind: kind.into(),
        name: name.clone(),
        uid: object.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(false),
    };
    Ok(Service {
        metadata: ObjectMeta {
            name: Some(flags.service_name.clone()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(ports),
            selector: Some([(VMI_ID_LABEL.to_owned(), vmi_id(&name))].into()),
            cluster_ip: flags.cluster_ip.clone(),
            type_: Some(service_type.into()),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The `ports` of the interface on the pod network, named `port-1`, `port-2`, ...
fn pod_network_ports(spec: &Value) -> Vec<ServicePort> {
    let Some(network) = spec["networks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n.get("pod").is_some())
        .and_then(|n| n["name"].as_str())
    else {
        return vec![];
    };
    let Some(iface) = spec["domain"]["devices"]["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["name"].as_str() == Some(network))
    else {
        return vec![];
    };
    iface["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, p)| {
            Some(ServicePort {
                name: Some(format!("port-{}", i + 1)),
                protocol: Some(p["protocol"].as_str().unwrap_or("TCP").to_owned()),
                port: i32::try_from(p["port"].as_i64()?).ok()?,
                ..Default::default()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(port: Option<i32>) -> ExposeFlags {
        ExposeFlags {
            service_name: "web".into(),
            port,
            target_port: Some("8080".into()),
            r#type: "NodePort".into(),
            protocol: "TCP".into(),
            port_name: None,
            cluster_ip: None,
        }
    }

    fn vm() -> (DynamicObject, Value) {
        let o: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "vm1", "uid": "u-1"},
        }))
        .unwrap();
        let spec = serde_json::json!({
            "networks": [{"name": "default", "pod": {}}],
            "domain": {"devices": {"interfaces": [{"name": "default", "masquerade": {},
                "ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}]}}
        });
        (o, spec)
    }

    #[test]
    fn the_flags_port_selects_the_launcher_pod() {
        let (o, spec) = vm();
        let s = service("VirtualMachine", &o, &spec, &flags(Some(8000))).unwrap();
        let sp = s.spec.unwrap();
        assert_eq!(sp.type_.as_deref(), Some("NodePort"));
        assert_eq!(sp.selector.unwrap()["vmi.kubevirt.io/id"], "vm1");
        let port = &sp.ports.unwrap()[0];
        assert_eq!(port.port, 8000);
        assert_eq!(port.target_port, Some(IntOrString::Int(8080)));
        let owner = &s.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("VirtualMachine", "u-1")
        );
        assert_eq!(owner.block_owner_deletion, Some(false));
    }

    #[test]
    fn without_port_the_interfaces_ports_are_taken() {
        let (o, spec) = vm();
        let s = service("VirtualMachine", &o, &spec, &flags(None)).unwrap();
        let ports = s.spec.unwrap().ports.unwrap();
        assert_eq!(ports.len(), 2);
        assert_eq!(
            (ports[1].name.as_deref(), ports[1].port),
            (Some("port-2"), 53)
        );
        assert_eq!(ports[1].protocol.as_deref(), Some("UDP"));
        let e = service("VirtualMachine", &o, &Value::Null, &flags(None)).unwrap_err();
        assert!(e.to_string().contains("couldn't find port"), "{e}");
        let mut bad = flags(Some(1));
        bad.r#type = "Magic".into();
        assert!(service("VirtualMachine", &o, &spec, &bad).is_err());
    }

    #[test]
    fn long_names_are_hashed_as_kubevirt_does() {
        assert_eq!(
            vmi_id(&"a".repeat(70)),
            format!("{}-ed6c69d9", "a".repeat(54))
        );
    }
}

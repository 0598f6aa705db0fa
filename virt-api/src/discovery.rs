//! The discovery documents of `subresources.kubevirt.io`, in the shapes KubeVirt's
//! virt-api serves them (`pkg/virt-api/api.go`): root paths, the group list, the group,
//! and per version a resource list of subresources, each namespaced and without verbs.
//!
//! Differences from KubeVirt, on purpose: the resource list names only the subresources
//! Ferrovirt serves (a client must not discover what answers 501), and the group's name is
//! `subresources.kubevirt.io` (KubeVirt's document says `subresource.kubevirt.io`; the
//! aggregator answers `/apis/subresources.kubevirt.io` itself, so clients never see it).

use serde_json::{Value, json};

pub const GROUP: &str = "subresources.kubevirt.io";
/// Served versions, preferred first (KubeVirt's `SubresourceGroupVersions`).
pub const VERSIONS: &[&str] = &["v1", "v1alpha3"];

/// Subresources served, as `<resource>/<subresource>`.
pub const SERVED: &[&str] = &[
    "virtualmachines/start",
    "virtualmachines/stop",
    "virtualmachines/restart",
    "virtualmachineinstances/console",
    "virtualmachineinstances/vnc",
    "virtualmachineinstances/pause",
    "virtualmachineinstances/unpause",
    "virtualmachineinstances/guestosinfo",
    "virtualmachineinstances/userlist",
    "virtualmachineinstances/filesystemlist",
];

/// KubeVirt subresources that exist there and are refused here with their name (501).
pub const NOT_YET: &[&str] = &[
    "virtualmachineinstances/vnc/screenshot",
    "virtualmachineinstances/freeze",
    "virtualmachineinstances/unfreeze",
    "virtualmachineinstances/reset",
    "virtualmachineinstances/softreboot",
    "virtualmachineinstances/portforward",
    "virtualmachineinstances/usbredir",
    "virtualmachineinstances/vsock",
    "virtualmachineinstances/addvolume",
    "virtualmachineinstances/removevolume",
    "virtualmachineinstances/objectgraph",
    "virtualmachineinstances/backup",
    "virtualmachineinstances/redefine-checkpoint",
    "virtualmachineinstances/evacuate/cancel",
    "virtualmachineinstances/sev/fetchcertchain",
    "virtualmachineinstances/sev/querylaunchmeasurement",
    "virtualmachineinstances/sev/setupsession",
    "virtualmachineinstances/sev/injectlaunchsecret",
    "virtualmachines/migrate",
    "virtualmachines/expand-spec",
    "virtualmachines/objectgraph",
    "virtualmachines/portforward",
    "virtualmachines/addvolume",
    "virtualmachines/removevolume",
    "virtualmachines/memorydump",
    "virtualmachines/removememorydump",
    "virtualmachines/evacuate/cancel",
];

/// `GET /`
pub fn root_paths() -> Value {
    let mut paths = vec!["/apis".to_string(), format!("/apis/{GROUP}")];
    paths.extend(VERSIONS.iter().map(|v| format!("/apis/{GROUP}/{v}")));
    json!({ "paths": paths })
}

/// `GET /apis/subresources.kubevirt.io`
pub fn api_group() -> Value {
    let versions: Vec<Value> = VERSIONS
        .iter()
        .map(|v| json!({"groupVersion": format!("{GROUP}/{v}"), "version": v}))
        .collect();
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": GROUP,
        "versions": versions,
        "preferredVersion": versions[0],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    })
}

/// `GET /apis`
pub fn api_group_list() -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [api_group()]})
}

/// `GET /apis/subresources.kubevirt.io/<version>`
pub fn resource_list(version: &str) -> Value {
    let resources: Vec<Value> = SERVED
        .iter()
        .map(|name| {
            json!({"name": name, "singularName": "", "namespaced": true, "kind": "", "verbs": null})
        })
        .collect();
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{version}"),
        "resources": resources,
    })
}

/// `GET /apis/subresources.kubevirt.io/<version>/version`: KubeVirt's version.Info shape.
pub fn version_info() -> Value {
    json!({
        "gitVersion": concat!("v", env!("CARGO_PKG_VERSION"), "-ferrovirt"),
        "gitCommit": option_env!("FERROVIRT_GIT_COMMIT").unwrap_or(""),
        "gitTreeState": "",
        "buildDate": option_env!("FERROVIRT_BUILD_DATE").unwrap_or("1970-01-01T00:00:00Z"),
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, goarch()),
    })
}

fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_list_names_what_is_served_in_kubevirt_shape() {
        let list = resource_list("v1");
        assert_eq!(list["groupVersion"], "subresources.kubevirt.io/v1");
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, SERVED);
        assert!(list["resources"][0]["namespaced"].as_bool().unwrap());
    }

    #[test]
    fn served_and_refused_do_not_overlap() {
        for s in SERVED {
            assert!(!NOT_YET.contains(s), "{s} is both served and refused");
        }
    }

    #[test]
    fn group_prefers_v1() {
        assert_eq!(api_group()["preferredVersion"]["version"], "v1");
        assert_eq!(api_group_list()["groups"][0]["name"], GROUP);
    }
}

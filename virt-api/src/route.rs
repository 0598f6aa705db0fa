//! What a request path means: a discovery document, a health or version endpoint, or a
//! namespaced subresource (`/apis/subresources.kubevirt.io/<v>/namespaces/<ns>/<resource>/
//! <name>/<subresource...>`).

use crate::discovery::{GROUP, VERSIONS};

/// A parsed request path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Root,
    Apis,
    Group,
    ResourceList { version: String },
    Version,
    Healthz,
    Subresource(Target),
    Unknown,
}

/// A namespaced subresource request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub version: String,
    pub namespace: String,
    /// `virtualmachines` or `virtualmachineinstances`
    pub resource: String,
    pub name: String,
    /// `start`, `console`, `vnc/screenshot`, `portforward` (its port and protocol are
    /// not part of it, as in KubeVirt's authorizer)
    pub subresource: String,
}

impl Route {
    /// Endpoints anyone may read: discovery, version, health (KubeVirt's noAuthEndpoints).
    pub fn needs_auth(&self) -> bool {
        matches!(self, Route::Subresource(_) | Route::Unknown)
    }
}

pub fn parse(path: &str) -> Route {
    let path = path.trim_end_matches('/');
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    match parts.as_slice() {
        [] | [""] => Route::Root,
        ["healthz"] => Route::Healthz,
        ["apis"] => Route::Apis,
        ["apis", g] if *g == GROUP => Route::Group,
        ["apis", g, v, rest @ ..] if *g == GROUP && VERSIONS.contains(v) => match rest {
            [] => Route::ResourceList {
                version: v.to_string(),
            },
            ["version"] => Route::Version,
            ["healthz"] => Route::Healthz,
            ["namespaces", ns, resource, name, sub @ ..]
                if !sub.is_empty() && !ns.is_empty() && !name.is_empty() =>
            {
                let subresource = if sub[0] == "portforward" {
                    "portforward".to_string()
                } else {
                    sub.join("/")
                };
                Route::Subresource(Target {
                    version: v.to_string(),
                    namespace: ns.to_string(),
                    resource: resource.to_string(),
                    name: name.to_string(),
                    subresource,
                })
            }
            _ => Route::Unknown,
        },
        _ => Route::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_vm_subresource() {
        let r = parse("/apis/subresources.kubevirt.io/v1/namespaces/ns1/virtualmachines/vm1/start");
        assert_eq!(
            r,
            Route::Subresource(Target {
                version: "v1".into(),
                namespace: "ns1".into(),
                resource: "virtualmachines".into(),
                name: "vm1".into(),
                subresource: "start".into(),
            })
        );
        assert!(r.needs_auth());
    }

    #[test]
    fn portforward_drops_port_and_protocol_like_kubevirt() {
        let r = parse(
            "/apis/subresources.kubevirt.io/v1alpha3/namespaces/n/virtualmachineinstances/v/portforward/22/tcp",
        );
        let Route::Subresource(t) = r else { panic!() };
        assert_eq!(t.subresource, "portforward");
        assert_eq!(t.version, "v1alpha3");
    }

    #[test]
    fn discovery_needs_no_auth() {
        for (path, route) in [
            ("/", Route::Root),
            ("/apis", Route::Apis),
            ("/apis/subresources.kubevirt.io", Route::Group),
            (
                "/apis/subresources.kubevirt.io/v1",
                Route::ResourceList {
                    version: "v1".into(),
                },
            ),
            ("/apis/subresources.kubevirt.io/v1/version", Route::Version),
            (
                "/apis/subresources.kubevirt.io/v1alpha3/healthz",
                Route::Healthz,
            ),
            ("/healthz", Route::Healthz),
        ] {
            let parsed = parse(path);
            assert_eq!(parsed, route, "{path}");
            assert!(!parsed.needs_auth(), "{path}");
        }
    }

    #[test]
    fn other_groups_and_versions_are_unknown() {
        assert_eq!(parse("/apis/kubevirt.io/v1"), Route::Unknown);
        assert_eq!(parse("/apis/subresources.kubevirt.io/v2"), Route::Unknown);
        assert_eq!(
            parse("/apis/subresources.kubevirt.io/v1/namespaces/n/virtualmachines/vm"),
            Route::Unknown
        );
    }
}

//! Authorization by a SubjectAccessReview, as KubeVirt's `rest/authorizer.go` builds it:
//! the user from the request headers, the subresource path as resource attributes, the
//! HTTP method mapped to an RBAC verb.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;

use crate::authn::User;
use crate::route::Target;

/// KubeVirt's `mapHttpVerbToRbacVerb` for a named object.
pub fn verb(method: &http::Method) -> Option<&'static str> {
    Some(match *method {
        http::Method::POST => "create",
        http::Method::GET | http::Method::HEAD => "get",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => return None,
    })
}

/// The review to ask for.
pub fn review(user: &User, target: &Target, verb: &str) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.name.clone()),
            groups: Some(user.groups.clone()),
            extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(target.namespace.clone()),
                verb: Some(verb.to_string()),
                group: Some(crate::discovery::GROUP.to_string()),
                version: Some(target.version.clone()),
                resource: Some(target.resource.clone()),
                subresource: Some(target.subresource.clone()),
                name: Some(target.name.clone()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Asks the API server. `Ok(Err(reason))` is a denial.
pub async fn check(
    client: &kube::Client,
    review: &SubjectAccessReview,
) -> Result<Result<(), String>, kube::Error> {
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), review).await?;
    let status = answer.status.unwrap_or_default();
    if status.allowed {
        Ok(Ok(()))
    } else {
        Ok(Err(status.reason.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_is_update_and_get_is_get() {
        assert_eq!(verb(&http::Method::PUT), Some("update"));
        assert_eq!(verb(&http::Method::GET), Some("get"));
        assert_eq!(verb(&http::Method::OPTIONS), None);
    }

    #[test]
    fn review_carries_the_subresource() {
        let user = User {
            name: "alice".into(),
            groups: vec!["dev".into()],
            ..Default::default()
        };
        let target = Target {
            version: "v1".into(),
            namespace: "ns".into(),
            resource: "virtualmachines".into(),
            name: "vm1".into(),
            subresource: "start".into(),
        };
        let r = review(&user, &target, "update");
        let a = r.spec.resource_attributes.unwrap();
        assert_eq!(a.group.as_deref(), Some("subresources.kubevirt.io"));
        assert_eq!(a.resource.as_deref(), Some("virtualmachines"));
        assert_eq!(a.subresource.as_deref(), Some("start"));
        assert_eq!(a.verb.as_deref(), Some("update"));
        assert_eq!(r.spec.user.as_deref(), Some("alice"));
        assert_eq!(r.spec.extra, None);
    }
}

//! Kubernetes `Status` answers, shaped as the apimachinery helpers KubeVirt's virt-api uses
//! shape them (`errors.NewConflict`, `NewNotFound`, `NewInternalError`, `NewBadRequest`),
//! so clients (kubectl, client-go, kube-rs, virtctl) print the message they expect.

use serde_json::{Value, json};

/// A refusal or failure with its HTTP code and the Status body.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    pub code: u16,
    pub body: Value,
}

/// The resource a Status is about (KubeVirt's `v1.Resource("virtualmachine")`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    VirtualMachine,
    VirtualMachineInstance,
}

impl Kind {
    fn resource(self) -> &'static str {
        match self {
            Kind::VirtualMachine => "virtualmachine",
            Kind::VirtualMachineInstance => "virtualmachineinstance",
        }
    }
    /// `virtualmachine.kubevirt.io`
    fn qualified(self) -> String {
        format!("{}.kubevirt.io", self.resource())
    }
}

impl Status {
    fn new(code: u16, reason: &str, message: String, details: Option<Value>) -> Self {
        let mut body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        });
        if let Some(d) = details {
            body["details"] = d;
        }
        Self { code, body }
    }

    fn details(kind: Kind, name: &str) -> Value {
        json!({"name": name, "group": "kubevirt.io", "kind": kind.resource()})
    }

    /// 409: `Operation cannot be fulfilled on virtualmachine.kubevirt.io "<name>": <why>`
    pub fn conflict(kind: Kind, name: &str, why: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": {why}",
            kind.qualified()
        );
        Self::new(409, "Conflict", message, Some(Self::details(kind, name)))
    }

    /// 404: `virtualmachine.kubevirt.io "<name>" not found`
    pub fn not_found(kind: Kind, name: &str) -> Self {
        let message = format!("{} \"{name}\" not found", kind.qualified());
        Self::new(404, "NotFound", message, Some(Self::details(kind, name)))
    }

    /// 500: `Internal error occurred: <why>`
    pub fn internal(why: &str) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {why}"),
            Some(json!({"causes": [{"message": why}]})),
        )
    }

    /// 400 with `message` as it is.
    pub fn bad_request(message: &str) -> Self {
        Self::new(400, "BadRequest", message.to_string(), None)
    }

    /// 401: what virt-api answers to a request it did not authenticate or authorize
    /// (KubeVirt answers 401 to both, with the reason).
    pub fn unauthorized(why: &str) -> Self {
        Self::new(401, "Unauthorized", why.to_string(), None)
    }

    /// 403: the API server's SubjectAccessReview said no.
    pub fn forbidden(message: &str) -> Self {
        Self::new(403, "Forbidden", message.to_string(), None)
    }

    /// 404 for a path virt-api does not serve.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find {path}"),
            None,
        )
    }

    /// 501: a KubeVirt subresource Ferrovirt does not serve yet, named.
    pub fn not_implemented(subresource: &str) -> Self {
        Self::new(
            501,
            "NotImplemented",
            format!("the {subresource} subresource is not implemented in Ferrovirt yet"),
            None,
        )
    }

    /// 405 for a method the route does not take.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on {path}"),
            None,
        )
    }

    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_reads_as_apimachinery_writes_it() {
        let s = Status::conflict(Kind::VirtualMachine, "vm1", "VM is already running");
        assert_eq!(s.code, 409);
        assert_eq!(
            s.message(),
            "Operation cannot be fulfilled on virtualmachine.kubevirt.io \"vm1\": VM is already running"
        );
        assert_eq!(s.body["reason"], "Conflict");
        assert_eq!(s.body["details"]["kind"], "virtualmachine");
        assert_eq!(s.body["kind"], "Status");
    }

    #[test]
    fn not_found_names_the_resource() {
        let s = Status::not_found(Kind::VirtualMachine, "gone");
        assert_eq!(s.code, 404);
        assert_eq!(s.message(), "virtualmachine.kubevirt.io \"gone\" not found");
    }
}

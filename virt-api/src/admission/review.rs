//! `admission.k8s.io/v1` AdmissionReview: the request kube-apiserver sends to a webhook and
//! the response it expects. Read as JSON (the object is not round-tripped through typed
//! structs, so the patch touches only what a default sets).

use serde_json::{Value, json};

/// What the API server is doing to the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

/// One admission request.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub uid: String,
    /// `VirtualMachine`, `VirtualMachineInstance`, ...
    pub kind: String,
    pub operation: Operation,
    pub object: Value,
    pub old_object: Option<Value>,
}

/// Why a request could not be read.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub String);

/// Reads an AdmissionReview body.
pub fn parse(body: &[u8]) -> Result<Request, Malformed> {
    let review: Value =
        serde_json::from_slice(body).map_err(|e| Malformed(format!("not JSON: {e}")))?;
    let req = &review["request"];
    let text = |v: &Value, what: &str| {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| Malformed(format!("request.{what} missing")))
    };
    let operation = match req["operation"].as_str() {
        Some("CREATE") => Operation::Create,
        Some("UPDATE") => Operation::Update,
        Some("DELETE") => Operation::Delete,
        Some("CONNECT") => Operation::Connect,
        other => return Err(Malformed(format!("unknown operation {other:?}"))),
    };
    Ok(Request {
        uid: text(&req["uid"], "uid")?,
        kind: text(&req["kind"]["kind"], "kind.kind")?,
        operation,
        object: req["object"].clone(),
        old_object: Some(req["oldObject"].clone()).filter(|o| !o.is_null()),
    })
}

/// A refusal's cause: the field and KubeVirt's message for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    pub field: String,
    pub message: String,
    /// `FieldValueInvalid`, `FieldValueRequired`, ...
    pub reason: &'static str,
}

impl Cause {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Cause {
            field: field.into(),
            message: message.into(),
            reason: "FieldValueInvalid",
        }
    }

    pub fn duplicate(field: impl Into<String>, message: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueDuplicate",
            ..Cause::invalid(field, message)
        }
    }

    pub fn required(field: impl Into<String>, message: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueRequired",
            ..Cause::invalid(field, message)
        }
    }

    pub fn not_found(field: impl Into<String>, message: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueNotFound",
            ..Cause::invalid(field, message)
        }
    }
}

/// KubeVirt reports at most this many causes (`webhooks.ToAdmissionResponse`).
pub const MAX_CAUSES: usize = 10;

/// The answer to one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    Allow {
        patch: Option<json_patch::Patch>,
    },
    Deny(Vec<Cause>),
    /// The request could not be read (400, KubeVirt's `ToAdmissionResponseError`).
    Error(String),
}

impl Response {
    /// The message a client sees: the causes' messages joined with ", ", at most
    /// [`MAX_CAUSES`], then ", and N more validation errors" (KubeVirt's form).
    pub fn message(causes: &[Cause]) -> String {
        let shown: Vec<&str> = causes
            .iter()
            .take(MAX_CAUSES)
            .map(|c| c.message.as_str())
            .collect();
        let mut message = shown.join(", ");
        if causes.len() > MAX_CAUSES {
            message.push_str(&format!(
                ", and {} more validation errors",
                causes.len() - MAX_CAUSES
            ));
        }
        message
    }

    /// The AdmissionReview that carries this answer to request `uid`.
    pub fn into_review(self, uid: &str) -> Value {
        let response = match self {
            Response::Allow { patch: None } => json!({"uid": uid, "allowed": true}),
            Response::Allow { patch: Some(p) } => {
                let bytes = serde_json::to_vec(&p).expect("a JSON patch serializes");
                json!({
                    "uid": uid,
                    "allowed": true,
                    "patchType": "JSONPatch",
                    "patch": k8s_openapi::ByteString(bytes),
                })
            }
            Response::Deny(causes) => {
                let shown: Vec<Value> = causes
                    .iter()
                    .take(MAX_CAUSES)
                    .map(|c| json!({"type": c.reason, "message": c.message, "field": c.field}))
                    .collect();
                json!({
                    "uid": uid,
                    "allowed": false,
                    "status": {
                        "status": "Failure",
                        "message": Response::message(&causes),
                        "reason": "Invalid",
                        "code": 422,
                        "details": {"causes": shown},
                    },
                })
            }
            Response::Error(message) => json!({
                "uid": uid,
                "allowed": false,
                "status": {"status": "Failure", "message": message, "code": 400},
            }),
        };
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": response,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_create_request() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
            "uid":"u1","kind":{"group":"kubevirt.io","version":"v1","kind":"VirtualMachine"},
            "operation":"CREATE","object":{"metadata":{"name":"vm1"}},"oldObject":null}}"#;
        let r = parse(body).unwrap();
        assert_eq!(r.uid, "u1");
        assert_eq!(r.kind, "VirtualMachine");
        assert_eq!(r.operation, Operation::Create);
        assert_eq!(r.old_object, None);
        assert!(parse(b"{}").is_err());
        assert!(parse(b"nope").is_err());
    }

    #[test]
    fn a_denial_joins_at_most_ten_causes_like_kubevirt() {
        let causes: Vec<Cause> = (0..12)
            .map(|i| Cause::invalid(format!("f{i}"), format!("m{i}")))
            .collect();
        assert_eq!(
            Response::message(&causes),
            "m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, and 2 more validation errors"
        );
        let review = Response::Deny(causes).into_review("u");
        let status = &review["response"]["status"];
        assert_eq!(review["response"]["uid"], "u");
        assert_eq!(review["response"]["allowed"], false);
        assert_eq!(status["code"], 422);
        assert_eq!(status["reason"], "Invalid");
        assert_eq!(status["details"]["causes"].as_array().unwrap().len(), 10);
        assert_eq!(status["details"]["causes"][0]["field"], "f0");
    }

    #[test]
    fn a_patch_is_base64_json() {
        let patch: json_patch::Patch =
            serde_json::from_value(json!([{"op": "add", "path": "/a", "value": 1}])).unwrap();
        let review = Response::Allow { patch: Some(patch) }.into_review("u");
        assert_eq!(review["response"]["patchType"], "JSONPatch");
        let decoded: k8s_openapi::ByteString =
            serde_json::from_value(review["response"]["patch"].clone()).unwrap();
        let back: Value = serde_json::from_slice(&decoded.0).unwrap();
        assert_eq!(back[0]["path"], "/a");
    }
}

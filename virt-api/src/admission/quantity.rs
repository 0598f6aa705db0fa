//! Resource quantities as the admission rules compare them, read with the workspace's
//! one parser (`crds::quantity`). A quantity in an object under review is a string
//! (`128Mi`, `1.5G`, `500m`) or a bare JSON number (the CRD schema marks quantities
//! int-or-string), so this reads a JSON value.

use serde_json::Value;

/// The quantity in thousandths of its unit (bytes, cores), rounded up; None when it is not
/// a quantity or is negative.
pub fn millis(v: &Value) -> Option<u64> {
    let parsed = match v {
        Value::String(s) => crds::quantity::parse(s)?,
        Value::Number(n) => crds::quantity::parse(&n.to_string())?,
        _ => return None,
    };
    parsed.ceil_milli_u64()
}

/// A quantity as it was written, for messages (`'128Mi'`).
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_strings_and_numbers() {
        for (input, want) in [
            (json!("128Mi"), Some(134_217_728_000)),
            (json!("500m"), Some(500)),
            (json!("1500m"), Some(1500)),
            (json!(1073741824), Some(1_073_741_824_000)),
            (json!(1.5), Some(1500)),
            (json!("-1"), None),
            (json!("12Xi"), None),
            (json!(true), None),
        ] {
            assert_eq!(millis(&input), want, "{input}");
        }
    }
}

//! Resource quantities as the admission rules compare them. A quantity in a stored object
//! is a string (`128Mi`, `1.5G`, `500m`) or a bare JSON number (the CRD schema marks them
//! int-or-string), so this reads a JSON value rather than a typed `Quantity`.

use serde_json::Value;

/// Suffixes and their factors; binary ones first, so `Mi` is not read as `M` + `i`.
const SUFFIXES: &[(&str, f64)] = &[
    ("Ki", 1024.0),
    ("Mi", 1_048_576.0),
    ("Gi", 1_073_741_824.0),
    ("Ti", 1_099_511_627_776.0),
    ("Pi", 1_125_899_906_842_624.0),
    ("Ei", 1_152_921_504_606_846_976.0),
    ("m", 1e-3),
    ("k", 1e3),
    ("M", 1e6),
    ("G", 1e9),
    ("T", 1e12),
    ("P", 1e15),
    ("E", 1e18),
];

/// The value of a quantity (bytes, cores), or None when it is not one.
pub fn parse(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => parse_str(s),
        _ => None,
    }
}

fn parse_str(s: &str) -> Option<f64> {
    let s = s.trim().strip_prefix('+').unwrap_or(s.trim());
    for (suffix, factor) in SUFFIXES {
        if let Some(number) = s.strip_suffix(suffix) {
            return number_part(number).map(|n| n * factor);
        }
    }
    // No suffix, or a decimal exponent (`2e3`).
    number_part(s)
}

fn number_part(s: &str) -> Option<f64> {
    if s.is_empty() || !s.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
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
            (json!("128Mi"), Some(134_217_728.0)),
            (json!("1.5Gi"), Some(1_610_612_736.0)),
            (json!("2G"), Some(2e9)),
            (json!("500m"), Some(0.5)),
            (json!("2e3"), Some(2000.0)),
            (json!(1073741824), Some(1_073_741_824.0)),
            (json!("+4"), Some(4.0)),
            (json!("12Xi"), None),
            (json!(""), None),
            (json!("Mi"), None),
            (json!(true), None),
        ] {
            assert_eq!(parse(&input), want, "{input}");
        }
    }
}

//! Kubernetes resource quantities (`128Mi`, `2G`, `1.5Gi`, `500m`) as numbers.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The quantity's value, or `None` when it is not a quantity.
pub fn value(q: &Quantity) -> Option<f64> {
    let s = q.0.trim();
    let split = s
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    // `1e3` is a number; `1E` would be exa, which no guest needs.
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "Pi" => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(number * factor)
}

/// A size in bytes, rounded up.
pub fn bytes(q: &Quantity) -> Option<u64> {
    value(q).filter(|v| *v >= 0.0).map(|v| v.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity(s.to_owned())
    }

    #[test]
    fn parses_binary_decimal_and_milli() {
        assert_eq!(bytes(&q("128Mi")), Some(128 << 20));
        assert_eq!(bytes(&q("1.5Gi")), Some(3 << 29));
        assert_eq!(bytes(&q("2G")), Some(2_000_000_000));
        assert_eq!(bytes(&q("1e3")), Some(1000));
        assert_eq!(bytes(&q("1024")), Some(1024));
        assert_eq!(value(&q("500m")), Some(0.5));
        assert_eq!(bytes(&q("12Xi")), None);
        assert_eq!(bytes(&q("")), None);
    }
}

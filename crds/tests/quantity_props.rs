//! Property tests of the quantity parser (issue 12): it never panics, and every quantity the
//! CRD's own patterns let through the API server parses, to the value a float reading gives.

use crds::quantity;
use proptest::prelude::*;
use proptest::string::string_regex;

/// Every quantity pattern in the generated CRDs, without its anchors.
fn crd_quantity_patterns() -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(p)) = map.get("pattern")
                    && p.contains("[KMGTPE]i")
                    && !out.contains(p)
                {
                    out.push(p.clone());
                }
                map.values().for_each(|v| walk(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for crd in crds::all() {
        walk(&serde_json::to_value(crd).expect("CRD to JSON"), &mut out);
    }
    assert!(
        out.len() >= 2,
        "the CRDs lost their quantity patterns: {out:?}"
    );
    out.into_iter()
        .map(|p| {
            p.trim_start_matches('^')
                .trim_end_matches('$')
                .replace(")?$", ")?")
        })
        .collect()
}

/// The value as a float, read independently of the parser.
fn float_value(s: &str) -> f64 {
    let unsigned = s.trim_start_matches('+');
    for (suffix, factor) in [
        ("Ki", 2f64.powi(10)),
        ("Mi", 2f64.powi(20)),
        ("Gi", 2f64.powi(30)),
        ("Ti", 2f64.powi(40)),
        ("Pi", 2f64.powi(50)),
        ("Ei", 2f64.powi(60)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ] {
        if let Some(number) = unsigned.strip_suffix(suffix) {
            return number.parse::<f64>().expect("a number") * factor;
        }
    }
    // Plain digits, or digits with an `e`/`E` exponent: Rust's float syntax, except that
    // `5.` and `.5` need a zero.
    let fixed = unsigned.replace(".e", ".0e").replace(".E", ".0E");
    let fixed = if fixed.ends_with('.') {
        format!("{fixed}0")
    } else {
        fixed
    };
    fixed.parse::<f64>().expect("a number")
}

fn digits(s: &str) -> usize {
    let mantissa = s.split(['e', 'E']).next().unwrap_or(s);
    mantissa.bytes().filter(u8::is_ascii_digit).count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_string_parses_or_is_refused_without_panic(s in any::<String>()) {
        if let Some(p) = quantity::parse(&s) {
            let _ = (p.ceil_u64(), p.ceil_milli_u64());
            prop_assert!(s.bytes().any(|b| b.is_ascii_digit()), "{s:?} parsed without a digit");
        }
    }

    #[test]
    fn quantity_shaped_noise_never_panics(s in "[+-]?[0-9.]{0,45}([KMGTPE]i|[numkMGTPEZ]|[eE][+-]?[0-9]{0,12})?[a-z ]?") {
        if let Some(p) = quantity::parse(&s) {
            let _ = (p.ceil_u64(), p.ceil_milli_u64());
        }
    }
}

/// What the CRD schema accepts the parser reads, as a float reading gives it (rounded up),
/// unless it is too long for u128 or too large for u64, which it says by `None`.
#[test]
fn every_quantity_the_schema_accepts_parses_to_its_value() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(3000));
    for pattern in crd_quantity_patterns() {
        let strategy = string_regex(&pattern).expect("the CRD pattern is a regex proptest reads");
        runner
            .run(&strategy, |s| {
                let parsed = quantity::parse(&s);
                let exponent_digits = s
                    .split(['e', 'E'])
                    .nth(1)
                    .map(|e| e.trim_start_matches(['+', '-']).len())
                    .unwrap_or(0);
                if digits(&s) <= 38 && exponent_digits <= 9 {
                    prop_assert!(
                        parsed.is_some(),
                        "{s:?} matches {pattern} but does not parse"
                    );
                }
                let Some(parsed) = parsed else { return Ok(()) };
                let float = float_value(&s);
                match parsed.ceil_u64() {
                    Some(v) => {
                        let (v, f) = (v as f64, float.ceil());
                        prop_assert!(
                            (v - f).abs() <= 1.0 + f * 1e-12,
                            "{s:?}: parser says {v}, float reading {float}"
                        );
                    }
                    None => prop_assert!(
                        float > 1.8e19,
                        "{s:?} = {float} fits u64 but the parser gave up"
                    ),
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("pattern {pattern}: {e}"));
    }
}

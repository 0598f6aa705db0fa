//! Kubernetes resource quantities, parsed exactly as the API server accepts them, so every
//! component reads `128Mi`, `+1Gi`, `1.5G`, `1e3`, `1E3`, `1E` (exa) or `500m` the same way.
//!
//! The grammar (k8s.io/apimachinery `resource.Quantity`): an optional sign, digits with at
//! most one `.` (at least one digit), then a binary suffix (`Ki` … `Ei`), a decimal suffix
//! (`n u m "" k M G T P E`) or a decimal exponent (`e`/`E` followed by a signed integer).
//! The value is kept exact (no floating point) until it is converted.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// A parsed quantity: `sign × digits × 10^exp10 × 2^exp2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    negative: bool,
    digits: u128,
    exp10: i32,
    exp2: u32,
}

/// Parses a quantity string; `None` when the API server would refuse it too.
pub fn parse(s: &str) -> Option<Parsed> {
    let (negative, rest) = match s.as_bytes().first()? {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return None;
    }
    let mut digits: u128 = 0;
    for c in whole.bytes().chain(fraction.bytes()) {
        digits = digits.checked_mul(10)?.checked_add(u128::from(c - b'0'))?;
    }
    let mut exp10 = -i32::try_from(fraction.len()).ok()?;
    let mut exp2 = 0;
    match suffix {
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "" => {}
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        e if e.starts_with(['e', 'E']) => {
            let exponent = &e[1..];
            let unsigned = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            exp10 = exp10.checked_add(exponent.parse::<i32>().ok()?)?;
        }
        _ => return None,
    }
    Some(Parsed {
        negative,
        digits,
        exp10,
        exp2,
    })
}

impl Parsed {
    /// The value rounded up to a whole number (as the API server's `Value()` does), or
    /// `None` when negative or beyond `u64`.
    pub fn ceil_u64(self) -> Option<u64> {
        if self.negative && self.digits != 0 {
            return None;
        }
        let (mut digits, mut exp10) = (self.digits, self.exp10);
        // `0.5000…0Gi`: trailing zeros must not overflow what follows.
        while digits != 0 && digits % 10 == 0 {
            digits /= 10;
            exp10 = exp10.checked_add(1)?;
        }
        if exp10 >= 0 {
            let n = digits
                .checked_mul(1u128.checked_shl(self.exp2)?)?
                .checked_mul(10u128.checked_pow(exp10.unsigned_abs())?)?;
            return u64::try_from(n).ok();
        }
        // digits × 2^exp2 / 10^k, rounded up, without forming the product: divide once,
        // then double quotient and remainder exp2 times (the remainder stays below the
        // divisor, at most 10^38, so doubling it fits u128). Rounding up in steps is exact:
        // ⌈⌈x / a⌉ / b⌉ = ⌈x / ab⌉.
        let k = exp10.unsigned_abs();
        let first = k.min(38);
        let d = 10u128.pow(first);
        let (mut q, mut r) = (digits / d, digits % d);
        for _ in 0..self.exp2 {
            q = q.checked_mul(2)?;
            r *= 2;
            if r >= d {
                q = q.checked_add(1)?;
                r -= d;
            }
        }
        if r != 0 {
            q = q.checked_add(1)?;
        }
        if k > first {
            q = match 10u128.checked_pow(k - first) {
                Some(d) => q.div_ceil(d),
                // q < 2^128 < 10^39: any non-zero quotient rounds up to 1.
                None => u128::from(q != 0),
            };
        }
        u64::try_from(q).ok()
    }

    /// The value in thousandths rounded up (as `MilliValue()`: CPU in millicores).
    pub fn ceil_milli_u64(self) -> Option<u64> {
        Parsed {
            exp10: self.exp10.checked_add(3)?,
            ..self
        }
        .ceil_u64()
    }
}

/// A size in bytes, rounded up; `None` for a negative or malformed quantity.
pub fn bytes(q: &Quantity) -> Option<u64> {
    parse(&q.0)?.ceil_u64()
}

/// Millicores (`500m` → 500, `2` → 2000), rounded up; `None` for a negative or malformed
/// quantity.
pub fn millis(q: &Quantity) -> Option<u64> {
    parse(&q.0)?.ceil_milli_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Option<u64> {
        bytes(&Quantity(s.into()))
    }

    #[test]
    fn every_suffix_form_the_api_server_accepts() {
        const MIB: u64 = 1 << 20;
        assert_eq!(b("128Mi"), Some(128 * MIB));
        assert_eq!(b("+1Gi"), Some(1 << 30));
        assert_eq!(b("1.5Gi"), Some(1536 * MIB));
        assert_eq!(b(".5Ki"), Some(512));
        assert_eq!(b("5."), Some(5));
        assert_eq!(b("2G"), Some(2_000_000_000));
        assert_eq!(b("1k"), Some(1000));
        assert_eq!(b("1Pi"), Some(1 << 50));
        assert_eq!(b("1Ei"), Some(1 << 60));
        assert_eq!(b("1E"), Some(1_000_000_000_000_000_000));
        assert_eq!(b("1e3"), Some(1000));
        assert_eq!(b("1E3"), Some(1000));
        assert_eq!(b("1e+3"), Some(1000));
        assert_eq!(b("15e-1"), Some(2), "1.5 rounds up");
        assert_eq!(b("1048576"), Some(MIB));
        assert_eq!(b("1.1"), Some(2), "rounded up, as Value()");
        assert_eq!(b("0"), Some(0));
        assert_eq!(b("-0"), Some(0));
        // Long mantissas the API server accepts (found by tests/quantity_props.rs).
        assert_eq!(b(".317000000000000000000000000000Gi"), Some(340_376_159));
        assert_eq!(
            b("0.100000000000000000000000000000000000000Ei"),
            Some((1u64 << 60).div_ceil(10))
        );
        assert_eq!(b("0.000000000000000000000000000000000000000001"), Some(1));
    }

    #[test]
    fn refuses_what_the_api_server_refuses_and_what_does_not_fit() {
        for bad in [
            "", "+", "-1Gi", "12Xi", "1.2.3", ".", "1e", "1e+", "1ee3", "Mi", "1 Mi", "1mi", "1Zi",
            "16Ei",
        ] {
            assert_eq!(b(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn millicores() {
        let m = |s: &str| millis(&Quantity(s.into()));
        assert_eq!(m("500m"), Some(500));
        assert_eq!(m("2"), Some(2000));
        assert_eq!(m("1.5"), Some(1500));
        assert_eq!(m("1u"), Some(1), "rounded up");
        assert_eq!(m("100n"), Some(1));
    }
}

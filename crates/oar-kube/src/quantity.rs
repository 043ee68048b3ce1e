//! Exact comparison of Kubernetes resource quantities (`"500m"`, `"2Gi"`, `"1e3"`).
//!
//! A quantity is `<sign><digits>[.<digits>]<suffix>` where the suffix is binary (`Ki` ... `Ei`),
//! decimal SI (`n`, `u`, `m`, none, `k`, `M`, `G`, `T`, `P`, `E`) or a decimal exponent
//! (`e3`, `E-2`). The comparison is exact (no floating point): the value is kept as
//! `mantissa × 10^exp10 × 2^exp2` with an arbitrary-size integer mantissa, as
//! `resource.Quantity.Cmp` does, so `0.1` equals `100m` and `1Gi` equals `1073741824`.

use std::cmp::Ordering;

/// Text that is not a Kubernetes quantity (or one absurdly large or precise).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a Kubernetes quantity")]
pub struct InvalidQuantity(pub String);

/// Longest mantissa and largest decimal exponent accepted; Kubernetes itself caps quantities
/// far below these.
const MAX_DIGITS: usize = 64;
const MAX_EXP10: i64 = 64;

/// A parsed quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed {
    negative: bool,
    /// Decimal digits of the mantissa, most significant first, without leading zeros
    /// (empty for zero).
    digits: Vec<u8>,
    exp10: i64,
    exp2: u32,
}

fn parse(text: &str) -> Result<Parsed, InvalidQuantity> {
    let bad = || InvalidQuantity(text.to_owned());
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let number_len = rest
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return Err(bad());
    }
    let (exp10, exp2) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => {
            let exp = suffix.strip_prefix(['e', 'E']).ok_or_else(bad)?;
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let value: i64 = exp.parse().map_err(|_| bad())?;
            if value.abs() > MAX_EXP10 {
                return Err(bad());
            }
            (value, 0)
        }
    };
    let digits: Vec<u8> = int
        .bytes()
        .chain(frac.bytes())
        .map(|b| b - b'0')
        .skip_while(|d| *d == 0)
        .collect();
    if digits.len() > MAX_DIGITS {
        return Err(bad());
    }
    let frac_len = i64::try_from(frac.len()).map_err(|_| bad())?;
    Ok(Parsed {
        negative: negative && !digits.is_empty(),
        digits,
        exp10: exp10 - frac_len,
        exp2,
    })
}

/// Whether `text` is a Kubernetes quantity.
pub fn is_valid(text: &str) -> bool {
    parse(text).is_ok()
}

/// Compares two quantities numerically: `compare("600m", "500m")` is `Greater`,
/// `compare("5000Mi", "2Gi")` is `Greater`, `compare("0.5", "500m")` is `Equal`.
pub fn compare(a: &str, b: &str) -> Result<Ordering, InvalidQuantity> {
    let (a, b) = (parse(a)?, parse(b)?);
    Ok(match (a.negative, b.negative) {
        (false, true) => Ordering::Greater,
        (true, false) => Ordering::Less,
        (false, false) => magnitude_cmp(&a, &b),
        (true, true) => magnitude_cmp(&b, &a),
    })
}

/// Compares `|a|` and `|b|`: both are scaled to integers over the common `10^e × 2^p`.
fn magnitude_cmp(a: &Parsed, b: &Parsed) -> Ordering {
    let exp10 = a.exp10.min(b.exp10);
    let exp2 = a.exp2.min(b.exp2);
    let scaled = |q: &Parsed| {
        let mut n = Big::from_digits(&q.digits);
        for _ in exp10..q.exp10 {
            n.mul_small(10);
        }
        for _ in exp2..q.exp2 {
            n.mul_small(2);
        }
        n
    };
    scaled(a).cmp(&scaled(b))
}

/// A non-negative integer, little-endian base 2^32 limbs without high zero limbs.
#[derive(Debug, PartialEq, Eq)]
struct Big(Vec<u32>);

impl Big {
    fn from_digits(digits: &[u8]) -> Self {
        let mut n = Big(Vec::new());
        for &d in digits {
            n.mul_small(10);
            n.add_small(u32::from(d));
        }
        n
    }

    fn mul_small(&mut self, factor: u32) {
        let mut carry = 0u64;
        for limb in &mut self.0 {
            let v = u64::from(*limb) * u64::from(factor) + carry;
            *limb = v as u32;
            carry = v >> 32;
        }
        if carry > 0 {
            self.0.push(carry as u32);
        }
    }

    fn add_small(&mut self, addend: u32) {
        let mut carry = u64::from(addend);
        for limb in &mut self.0 {
            if carry == 0 {
                return;
            }
            let v = u64::from(*limb) + carry;
            *limb = v as u32;
            carry = v >> 32;
        }
        if carry > 0 {
            self.0.push(carry as u32);
        }
    }
}

impl PartialOrd for Big {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Big {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.iter().rev().cmp(other.0.iter().rev()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    fn cmp(a: &str, b: &str) -> Ordering {
        compare(a, b).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn gitlab_examples() {
        assert_eq!(cmp("600m", "500m"), Greater);
        assert_eq!(cmp("12", "10"), Greater);
        assert_eq!(cmp("5000Mi", "2Gi"), Greater);
        assert_eq!(cmp("500m", "1"), Less);
        assert_eq!(cmp("2Gi", "2Gi"), Equal);
    }

    #[test]
    fn exact_equalities() {
        assert_eq!(cmp("0.1", "100m"), Equal);
        assert_eq!(cmp("1Gi", "1073741824"), Equal);
        assert_eq!(cmp("1Ki", "1.024k"), Equal);
        assert_eq!(cmp("1e3", "1k"), Equal);
        assert_eq!(cmp("1E-3", "1m"), Equal);
        assert_eq!(cmp("1000000n", "1m"), Equal);
        assert_eq!(cmp("0", "-0"), Equal);
        assert_eq!(cmp("000.5", "500m"), Equal);
        assert_eq!(cmp(".5", "0.5"), Equal);
        assert_eq!(cmp("1.", "1"), Equal);
    }

    #[test]
    fn near_misses_and_large_values() {
        assert_eq!(cmp("1073741825", "1Gi"), Greater);
        assert_eq!(cmp("1Ei", "1E"), Greater);
        assert_eq!(cmp("999999999999999999999", "1e21"), Less);
        assert_eq!(cmp("1n", "0"), Greater);
        assert_eq!(cmp("-1", "1n"), Less);
        assert_eq!(cmp("-2", "-1"), Less);
        assert_eq!(cmp("1.5Gi", "1536Mi"), Equal);
        // Floating point would call these equal.
        assert_eq!(cmp("9007199254740993", "9007199254740992"), Greater);
    }

    #[test]
    fn invalid_quantities() {
        for bad in [
            "", "m", "1.2.3", "2GB", "1 Gi", "abc", "1e", "1ee3", "--1", "1Ki2", ".", "1e999", "+",
        ] {
            assert!(compare(bad, "1").is_err(), "{bad:?} should be invalid");
            assert!(!is_valid(bad));
        }
        assert!(is_valid("+1k"));
        assert_eq!(
            compare("1", "x").unwrap_err().to_string(),
            "\"x\" is not a Kubernetes quantity"
        );
    }
}

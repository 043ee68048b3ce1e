//! Kubernetes resource quantities (`"500m"`, `"2Gi"`, `"1e3"`).

use std::fmt;

/// A string that has the form of a Kubernetes `resource.Quantity`.
///
/// The text is kept as written; [`Quantity::as_f64`] gives its numeric value for comparisons
/// such as "requested <= max allowed".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Quantity(String);

const SUFFIXES: [(&str, f64); 16] = [
    ("Ki", 1024.0),
    ("Mi", 1_048_576.0),
    ("Gi", 1_073_741_824.0),
    ("Ti", 1_099_511_627_776.0),
    ("Pi", 1_125_899_906_842_624.0),
    ("Ei", 1_152_921_504_606_846_976.0),
    ("n", 1e-9),
    ("u", 1e-6),
    ("m", 1e-3),
    ("k", 1e3),
    ("M", 1e6),
    ("G", 1e9),
    ("T", 1e12),
    ("P", 1e15),
    ("E", 1e18),
    ("", 1.0),
];

/// Splits `text` into its signed number and suffix, if it is a well-formed quantity.
fn split(text: &str) -> Option<(&str, &str)> {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let sign_len = text.len() - unsigned.len();
    let number_len = unsigned
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(unsigned.len());
    let number = unsigned.get(..number_len)?;
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return None;
    }
    let suffix = unsigned.get(number_len..)?;
    let valid_suffix = SUFFIXES.iter().any(|(s, _)| *s == suffix)
        || suffix
            .strip_prefix(['e', 'E'])
            .map(|exp| exp.strip_prefix(['+', '-']).unwrap_or(exp))
            .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
    valid_suffix.then(|| text.split_at(sign_len + number_len))
}

impl Quantity {
    /// Checks the form of `text`; `None` when it is not a quantity.
    pub fn new(text: &str) -> Option<Self> {
        split(text).map(|_| Self(text.to_owned()))
    }

    /// The quantity as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The numeric value (`"500m"` is 0.5, `"2Gi"` is 2147483648).
    pub fn as_f64(&self) -> f64 {
        let Some((number, suffix)) = split(&self.0) else {
            return f64::NAN;
        };
        let value: f64 = number.parse().unwrap_or(f64::NAN);
        if let Some(exp) = suffix.strip_prefix(['e', 'E']) {
            let exp: i32 = exp.parse().unwrap_or(0);
            return value * 10f64.powi(exp);
        }
        let factor = SUFFIXES
            .iter()
            .find(|(s, _)| *s == suffix)
            .map_or(1.0, |(_, f)| *f);
        value * factor
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kubernetes_quantities() {
        for ok in [
            "1", "500m", "0.5", "2Gi", "128Mi", "1e3", "1E-2", "+1k", ".5", "1.", "100n",
        ] {
            assert!(Quantity::new(ok).is_some(), "{ok} should be a quantity");
        }
        for bad in [
            "", "m", "1.2.3", "2GB", "1 Gi", "abc", "1e", "1ee3", "--1", "1Ki2",
        ] {
            assert!(
                Quantity::new(bad).is_none(),
                "{bad} should not be a quantity"
            );
        }
    }

    #[test]
    fn numeric_values() {
        let v = |s: &str| Quantity::new(s).unwrap().as_f64();
        assert!((v("500m") - 0.5).abs() < 1e-12);
        assert!(v("600m") > v("500m"));
        assert!(v("5000Mi") > v("2Gi"));
        assert!(v("12") > v("10"));
        assert!((v("1e3") - 1000.0).abs() < 1e-9);
    }
}

//! Exact rationals for GSM8K answers, so that `3.50`, `7/2` and `3.5` compare equal without any
//! floating-point tolerance deciding what "equal" means.

use std::fmt;

/// A reduced fraction `num / den` with `den > 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rational {
    num: i128,
    den: i128,
}

impl Rational {
    /// Builds a reduced rational; `None` for a zero denominator.
    fn new(num: i128, den: i128) -> Option<Rational> {
        if den == 0 {
            return None;
        }
        let g = gcd(num.unsigned_abs(), den.unsigned_abs()).max(1);
        // `g` divides both magnitudes, so it fits i128 whenever they do.
        let g = i128::try_from(g).ok()?;
        let sign = if den < 0 { -1 } else { 1 };
        Some(Rational { num: sign * (num / g), den: sign * (den / g) })
    }

    /// Parses unsigned `digits[.digits]` (no commas, no sign). `None` if malformed or too long
    /// for i128 (about 38 digits), which no GSM8K answer comes near.
    pub(crate) fn parse_decimal(text: &str) -> Option<Rational> {
        let (int_part, frac_part) = text.split_once('.').unwrap_or((text, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int_part.is_empty() && frac_part.is_empty() || !all_digits(int_part) || !all_digits(frac_part) {
            return None;
        }
        let digits = format!("{int_part}{frac_part}");
        let num: i128 = digits.parse().ok()?;
        let den = 10i128.checked_pow(u32::try_from(frac_part.len()).ok()?)?;
        Rational::new(num, den)
    }

    pub(crate) fn neg(self) -> Rational {
        Rational { num: -self.num, den: self.den }
    }

    /// `self / other`; `None` on division by zero or overflow.
    pub(crate) fn div(self, other: Rational) -> Option<Rational> {
        let num = self.num.checked_mul(other.den)?;
        let den = self.den.checked_mul(other.num)?;
        Rational::new(num, den)
    }
}

impl fmt::Display for Rational {
    /// Canonical text: `12`, `-3.5`, `0.75`, or `1/3` when the decimal expansion does not end.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 {
            return write!(f, "{}", self.num);
        }
        let (twos, fives, rest) = factor_2_5(self.den);
        if rest != 1 {
            return write!(f, "{}/{}", self.num, self.den);
        }
        // den = 2^a 5^b divides 10^max(a, b): scale the numerator and place the point.
        let places = twos.max(fives);
        let scaled = 10i128.checked_pow(places).and_then(|p| self.num.checked_mul(p / self.den));
        let Some(scaled) = scaled else {
            return write!(f, "{}/{}", self.num, self.den);
        };
        let digits = format!("{:0>width$}", scaled.unsigned_abs(), width = places as usize + 1);
        let (int_digits, frac_digits) = digits.split_at(digits.len() - places as usize);
        let sign = if scaled < 0 { "-" } else { "" };
        write!(f, "{sign}{int_digits}.{frac_digits}")
    }
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `den = 2^twos * 5^fives * rest`.
fn factor_2_5(mut den: i128) -> (u32, u32, i128) {
    let (mut twos, mut fives) = (0, 0);
    while den % 2 == 0 {
        den /= 2;
        twos += 1;
    }
    while den % 5 == 0 {
        den /= 5;
        fives += 1;
    }
    (twos, fives, den)
}

#[cfg(test)]
mod tests {
    use super::Rational;

    fn show(text: &str) -> String {
        Rational::parse_decimal(text).map(|r| r.to_string()).unwrap_or_default()
    }

    #[test]
    fn canonical_text() {
        assert_eq!(show("3.50"), "3.5");
        assert_eq!(show("3.0"), "3");
        assert_eq!(show("007"), "7");
        assert_eq!(show(".25"), "0.25");
        assert_eq!(show("0.05"), "0.05");
        assert_eq!(show(""), "");
        assert_eq!(show("."), "");
        assert_eq!(show("1e3"), "");
        let third = Rational::parse_decimal("1").and_then(|one| one.div(Rational::parse_decimal("3")?));
        assert_eq!(third.map(|r| r.to_string()).as_deref(), Some("1/3"));
        let neg = Rational::parse_decimal("3").and_then(|t| t.neg().div(Rational::parse_decimal("8")?));
        assert_eq!(neg.map(|r| r.to_string()).as_deref(), Some("-0.375"));
        assert_eq!(Rational::parse_decimal("1").and_then(|one| one.div(Rational::parse_decimal("0")?)), None);
        // 39 digits overflow i128: unparsable rather than wrong.
        assert_eq!(Rational::parse_decimal(&"9".repeat(39)), None);
    }
}

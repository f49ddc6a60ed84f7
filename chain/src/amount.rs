//! Token amounts: 18-decimal `u128`s, written and read as decimal tokens.

use std::fmt;
use std::str::FromStr;

/// Decimals of the chain's token.
pub const DECIMALS: u32 = 18;
/// One token in the chain's smallest unit.
pub const TOKEN: u128 = 10u128.pow(DECIMALS);

/// An amount in the smallest unit (1 token = 10^18).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(pub u128);

impl Amount {
    /// Whole tokens.
    pub fn tokens(tokens: u128) -> Self {
        Amount(tokens.saturating_mul(TOKEN))
    }

    /// The amount in the smallest unit.
    pub fn planck(self) -> u128 {
        self.0
    }
}

/// Text that is not a token amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Not digits with at most one decimal point.
    #[error("{0:?} is not an amount of tokens (expected e.g. 100 or 0.25)")]
    Malformed(String),
    /// More than 18 decimals.
    #[error("{0:?} has more than 18 decimals")]
    TooPrecise(String),
    /// Beyond `u128`.
    #[error("{0:?} is too large")]
    TooLarge(String),
}

impl FromStr for Amount {
    type Err = AmountError;

    /// Parse tokens: `100`, `0.5`, `1_000`, `12.000000000000000001`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let cleaned: String = text.trim().chars().filter(|c| *c != '_').collect();
        let malformed = || AmountError::Malformed(text.to_owned());
        let (whole, fraction) = match cleaned.split_once('.') {
            Some((w, f)) => (w, f),
            None => (cleaned.as_str(), ""),
        };
        if (whole.is_empty() && fraction.is_empty())
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(malformed());
        }
        if fraction.len() > DECIMALS as usize {
            return Err(AmountError::TooPrecise(text.to_owned()));
        }
        let too_large = || AmountError::TooLarge(text.to_owned());
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_large())?
        };
        let mut fraction_units: u128 = 0;
        if !fraction.is_empty() {
            let padded = format!("{fraction:0<18}");
            fraction_units = padded.parse().map_err(|_| malformed())?;
        }
        whole
            .checked_mul(TOKEN)
            .and_then(|w| w.checked_add(fraction_units))
            .map(Amount)
            .ok_or_else(too_large)
    }
}

impl fmt::Display for Amount {
    /// Tokens with trailing zeros trimmed: `100`, `0.25`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / TOKEN;
        let fraction = self.0 % TOKEN;
        if fraction == 0 {
            write!(f, "{whole}")
        } else {
            let digits = format!("{fraction:018}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_tokens() {
        for (text, planck) in [
            ("100", 100 * TOKEN),
            ("0.25", TOKEN / 4),
            (".5", TOKEN / 2),
            ("1_000", 1_000 * TOKEN),
            ("0.000000000000000001", 1),
            ("7.", 7 * TOKEN),
        ] {
            assert_eq!(text.parse::<Amount>().unwrap(), Amount(planck), "{text}");
        }
        assert_eq!(Amount(100 * TOKEN).to_string(), "100");
        assert_eq!(Amount(TOKEN / 4 + 3 * TOKEN).to_string(), "3.25");
        assert_eq!(Amount(1).to_string(), "0.000000000000000001");
    }

    #[test]
    fn refuses_what_is_not_an_amount() {
        assert!(matches!(
            "".parse::<Amount>(),
            Err(AmountError::Malformed(_))
        ));
        assert!(matches!(
            ".".parse::<Amount>(),
            Err(AmountError::Malformed(_))
        ));
        assert!(matches!(
            "-1".parse::<Amount>(),
            Err(AmountError::Malformed(_))
        ));
        assert!(matches!(
            "1e18".parse::<Amount>(),
            Err(AmountError::Malformed(_))
        ));
        assert!(matches!(
            "1.2.3".parse::<Amount>(),
            Err(AmountError::Malformed(_))
        ));
        assert!(matches!(
            "0.0000000000000000001".parse::<Amount>(),
            Err(AmountError::TooPrecise(_))
        ));
        assert!(matches!(
            "1000000000000000000000000".parse::<Amount>(),
            Err(AmountError::TooLarge(_))
        ));
    }
}

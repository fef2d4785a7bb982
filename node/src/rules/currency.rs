//! Currencies and amounts as people type and read them: how many minor-unit digits each
//! ISO 4217 currency has (2 for the euro, 0 for the yen, 3 for the Bahraini dinar), decimal
//! text to an exact integer of minor units and back. Pure and exact: no floats, checked
//! arithmetic, and text that is not a plain positive amount is an error, never a guess.
//!
//! The table is ISO 4217's list of active codes (published 2025-05-12: the Caribbean guilder
//! XCG replaced the Netherlands Antillean guilder ANG, the Cuban convertible peso CUC was
//! withdrawn), without the codes that are no money: precious metals (XAU, XAG, XPT, XPD),
//! units of account and drawing rights (XBA to XBD, XDR, XSU, XUA, XAD), the testing code XTS
//! and "no currency" XXX.

pub use super::settle::MAX_AMOUNT;

/// Active ISO 4217 codes and their minor-unit digits, sorted by code (binary searched).
#[rustfmt::skip]
const TABLE: &[(&str, u8)] = &[
    ("AED", 2), ("AFN", 2), ("ALL", 2), ("AMD", 2), ("AOA", 2), ("ARS", 2), ("AUD", 2), ("AWG", 2),
    ("AZN", 2), ("BAM", 2), ("BBD", 2), ("BDT", 2), ("BGN", 2), ("BHD", 3), ("BIF", 0), ("BMD", 2),
    ("BND", 2), ("BOB", 2), ("BOV", 2), ("BRL", 2), ("BSD", 2), ("BTN", 2), ("BWP", 2), ("BYN", 2),
    ("BZD", 2), ("CAD", 2), ("CDF", 2), ("CHE", 2), ("CHF", 2), ("CHW", 2), ("CLF", 4), ("CLP", 0),
    ("CNY", 2), ("COP", 2), ("COU", 2), ("CRC", 2), ("CUP", 2), ("CVE", 2), ("CZK", 2), ("DJF", 0),
    ("DKK", 2), ("DOP", 2), ("DZD", 2), ("EGP", 2), ("ERN", 2), ("ETB", 2), ("EUR", 2), ("FJD", 2),
    ("FKP", 2), ("GBP", 2), ("GEL", 2), ("GHS", 2), ("GIP", 2), ("GMD", 2), ("GNF", 0), ("GTQ", 2),
    ("GYD", 2), ("HKD", 2), ("HNL", 2), ("HTG", 2), ("HUF", 2), ("IDR", 2), ("ILS", 2), ("INR", 2),
    ("IQD", 3), ("IRR", 2), ("ISK", 0), ("JMD", 2), ("JOD", 3), ("JPY", 0), ("KES", 2), ("KGS", 2),
    ("KHR", 2), ("KMF", 0), ("KPW", 2), ("KRW", 0), ("KWD", 3), ("KYD", 2), ("KZT", 2), ("LAK", 2),
    ("LBP", 2), ("LKR", 2), ("LRD", 2), ("LSL", 2), ("LYD", 3), ("MAD", 2), ("MDL", 2), ("MGA", 2),
    ("MKD", 2), ("MMK", 2), ("MNT", 2), ("MOP", 2), ("MRU", 2), ("MUR", 2), ("MVR", 2), ("MWK", 2),
    ("MXN", 2), ("MXV", 2), ("MYR", 2), ("MZN", 2), ("NAD", 2), ("NGN", 2), ("NIO", 2), ("NOK", 2),
    ("NPR", 2), ("NZD", 2), ("OMR", 3), ("PAB", 2), ("PEN", 2), ("PGK", 2), ("PHP", 2), ("PKR", 2),
    ("PLN", 2), ("PYG", 0), ("QAR", 2), ("RON", 2), ("RSD", 2), ("RUB", 2), ("RWF", 0), ("SAR", 2),
    ("SBD", 2), ("SCR", 2), ("SDG", 2), ("SEK", 2), ("SGD", 2), ("SHP", 2), ("SLE", 2), ("SOS", 2),
    ("SRD", 2), ("SSP", 2), ("STN", 2), ("SVC", 2), ("SYP", 2), ("SZL", 2), ("THB", 2), ("TJS", 2),
    ("TMT", 2), ("TND", 3), ("TOP", 2), ("TRY", 2), ("TTD", 2), ("TWD", 2), ("TZS", 2), ("UAH", 2),
    ("UGX", 0), ("USD", 2), ("USN", 2), ("UYI", 0), ("UYU", 2), ("UYW", 4), ("UZS", 2), ("VED", 2),
    ("VES", 2), ("VND", 0), ("VUV", 0), ("WST", 2), ("XAF", 0), ("XCD", 2), ("XCG", 2), ("XOF", 0),
    ("XPF", 0), ("YER", 2), ("ZAR", 2), ("ZMW", 2), ("ZWG", 2),
];

/// Why a currency code or an amount is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CurrencyError {
    /// Not an active ISO 4217 code (codes are three capital letters: "EUR", not "eur").
    #[error("{0:?} is not a known ISO 4217 currency code")]
    Unknown(String),
    /// Empty, or not digits with at most one decimal separator.
    #[error("an amount is digits, optionally followed by a '.' or ',' and more digits")]
    Syntax,
    /// More decimals than the currency has.
    #[error("{code} amounts have at most {digits} decimals")]
    Decimals {
        /// The currency.
        code: String,
        /// Its minor-unit digits.
        digits: u8,
    },
    /// Zero or negative.
    #[error("an amount must be more than 0")]
    NotPositive,
    /// Over [`MAX_AMOUNT`] minor units.
    #[error("an amount must be at most {MAX_AMOUNT} minor units")]
    TooLarge,
}

/// The number of minor-unit digits of an active ISO 4217 currency (`Some(2)` for "EUR",
/// `Some(0)` for "JPY", `Some(3)` for "BHD"), or `None` for a code not in the list.
pub fn minor_digits(code: &str) -> Option<u8> {
    TABLE.binary_search_by(|(c, _)| (*c).cmp(code)).ok().and_then(|i| TABLE.get(i)).map(|e| e.1)
}

/// The minor-unit digits of `code`, or an error if it is not an active ISO 4217 code.
pub fn check(code: &str) -> Result<u8, CurrencyError> {
    minor_digits(code).ok_or_else(|| CurrencyError::Unknown(code.to_owned()))
}

/// An amount typed as decimal text ("45", "45.5", "45,50", "0.99") in minor units of `code`
/// (4550 for "45.50" in EUR). Surrounding whitespace is ignored; either '.' or ',' separates
/// the decimals, and thousands separators, signs, exponents and more decimals than the
/// currency has are refused, as are 0 and anything over [`MAX_AMOUNT`] minor units.
pub fn parse_amount(text: &str, code: &str) -> Result<i64, CurrencyError> {
    let digits = check(code)?;
    let text = text.trim();
    if text.starts_with('-') {
        return Err(CurrencyError::NotPositive);
    }
    let (whole, frac) = match text.find(['.', ',']) {
        Some(i) => (&text[..i], Some(&text[i + 1..])),
        None => (text, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || frac.is_some_and(|f| !all_digits(f)) {
        return Err(CurrencyError::Syntax);
    }
    let frac = frac.unwrap_or("");
    if frac.len() > usize::from(digits) {
        return Err(CurrencyError::Decimals { code: code.to_owned(), digits });
    }
    // The whole part, then the decimals padded with zeros to the currency's digits.
    let padding = std::iter::repeat_n(b'0', usize::from(digits) - frac.len());
    let mut minor: i64 = 0;
    for b in whole.bytes().chain(frac.bytes()).chain(padding) {
        minor = minor
            .checked_mul(10)
            .and_then(|m| m.checked_add(i64::from(b - b'0')))
            .filter(|m| *m <= MAX_AMOUNT)
            .ok_or(CurrencyError::TooLarge)?;
    }
    if minor == 0 {
        return Err(CurrencyError::NotPositive);
    }
    Ok(minor)
}

/// An amount in minor units as text with its code: "45.50 EUR", "-12.00 EUR", "1000 JPY",
/// "1.234 BHD". A code not in the list is shown with 2 decimals.
pub fn format_amount(minor: i64, code: &str) -> String {
    format_amount_i128(i128::from(minor), code)
}

/// [`format_amount`] for a balance, which may be beyond one amount's range.
pub fn format_amount_i128(minor: i128, code: &str) -> String {
    let digits = usize::from(minor_digits(code).unwrap_or(2));
    let sign = if minor < 0 { "-" } else { "" };
    // Pad to more digits than the decimals, so there is always a whole part.
    let text = format!("{:0width$}", minor.unsigned_abs(), width = digits + 1);
    let (whole, frac) = text.split_at(text.len() - digits);
    if frac.is_empty() {
        format!("{sign}{whole} {code}")
    } else {
        format!("{sign}{whole}.{frac} {code}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_table_is_sorted_and_holds_only_money() {
        assert!(TABLE.windows(2).all(|w| w[0].0 < w[1].0), "sorted, no duplicates");
        assert!(TABLE
            .iter()
            .all(|(c, _)| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase())));
        assert!(TABLE.iter().all(|(_, d)| *d <= 4));
        assert_eq!(TABLE.len(), 165);
        for code in [
            "XAU", "XAG", "XPT", "XPD", "XTS", "XXX", "XDR", "XSU", "XUA", "XBA", "XBB", "XBC",
            "XBD", "XAD", "ANG", "CUC", "HRK", "ZWL", "SLL", "DEM",
        ] {
            assert_eq!(minor_digits(code), None, "{code}");
        }
    }

    #[test]
    fn minor_digits_of_well_known_currencies() {
        for (code, digits) in [
            ("EUR", 2),
            ("USD", 2),
            ("GBP", 2),
            ("CHF", 2),
            ("DKK", 2),
            ("XCG", 2),
            ("JPY", 0),
            ("KRW", 0),
            ("ISK", 0),
            ("XOF", 0),
            ("BHD", 3),
            ("KWD", 3),
            ("TND", 3),
            ("JOD", 3),
            ("OMR", 3),
            ("IQD", 3),
            ("LYD", 3),
            ("CLF", 4),
            ("UYW", 4),
            ("AED", 2),
            ("ZWG", 2),
        ] {
            assert_eq!(minor_digits(code), Some(digits), "{code}");
            assert_eq!(check(code), Ok(digits));
        }
    }

    #[test]
    fn unknown_codes_are_refused() {
        for code in ["", "eur", "Eur", "EURO", "EU", "XYZ", "€", "E\u{0}R"] {
            assert_eq!(minor_digits(code), None, "{code:?}");
            assert_eq!(check(code), Err(CurrencyError::Unknown(code.into())));
        }
        assert_eq!(
            check("XYZ").unwrap_err().to_string(),
            "\"XYZ\" is not a known ISO 4217 currency code"
        );
    }

    #[test]
    fn amounts_parse_exactly() {
        for (text, code, minor) in [
            ("45", "EUR", 4500),
            ("45.5", "EUR", 4550),
            ("45.50", "EUR", 4550),
            ("45,50", "EUR", 4550),
            ("0.99", "EUR", 99),
            ("0,01", "EUR", 1),
            (" 12.3 ", "EUR", 1230),
            ("007", "EUR", 700),
            ("1000", "JPY", 1000),
            ("1.234", "BHD", 1234),
            ("1.2", "BHD", 1200),
            ("0.0001", "CLF", 1),
            ("10000000000000", "EUR", MAX_AMOUNT),
            ("1000000000000000", "JPY", MAX_AMOUNT),
            ("000000000000000000000000000000001", "EUR", 100),
        ] {
            assert_eq!(parse_amount(text, code), Ok(minor), "{text:?} {code}");
        }
    }

    #[test]
    fn what_is_not_a_plain_positive_amount_is_refused() {
        use CurrencyError::*;
        let decimals = |code: &str, digits| Decimals { code: code.into(), digits };
        for (text, code, err) in [
            ("", "EUR", Syntax),
            ("   ", "EUR", Syntax),
            (".", "EUR", Syntax),
            (".5", "EUR", Syntax),
            ("5.", "EUR", Syntax),
            ("1,234.50", "EUR", Syntax),
            ("1.234,50", "EUR", Syntax),
            ("1 234", "EUR", Syntax),
            ("+5", "EUR", Syntax),
            ("1e3", "EUR", Syntax),
            ("12€", "EUR", Syntax),
            ("١٢", "EUR", Syntax),
            ("0x10", "EUR", Syntax),
            ("NaN", "EUR", Syntax),
            ("-5", "EUR", NotPositive),
            ("-0.01", "EUR", NotPositive),
            ("0", "EUR", NotPositive),
            ("0.00", "EUR", NotPositive),
            ("45.505", "EUR", decimals("EUR", 2)),
            ("45.500", "EUR", decimals("EUR", 2)),
            ("1000.0", "JPY", decimals("JPY", 0)),
            ("1.2345", "BHD", decimals("BHD", 3)),
            ("10000000000000.01", "EUR", TooLarge),
            ("1000000000000001", "JPY", TooLarge),
            ("99999999999999999999999999999999999999999", "EUR", TooLarge),
            ("5", "eur", Unknown("eur".into())),
        ] {
            assert_eq!(parse_amount(text, code), Err(err), "{text:?} {code}");
        }
    }

    #[test]
    fn amounts_format_with_the_currency_digits() {
        assert_eq!(format_amount(4550, "EUR"), "45.50 EUR");
        assert_eq!(format_amount(-1200, "EUR"), "-12.00 EUR");
        assert_eq!(format_amount(5, "EUR"), "0.05 EUR");
        assert_eq!(format_amount(-5, "EUR"), "-0.05 EUR");
        assert_eq!(format_amount(0, "EUR"), "0.00 EUR");
        assert_eq!(format_amount(1000, "JPY"), "1000 JPY");
        assert_eq!(format_amount(0, "JPY"), "0 JPY");
        assert_eq!(format_amount(-7, "JPY"), "-7 JPY");
        assert_eq!(format_amount(1234, "BHD"), "1.234 BHD");
        assert_eq!(format_amount(1, "CLF"), "0.0001 CLF");
        assert_eq!(format_amount(123, "XYZ"), "1.23 XYZ");
        assert_eq!(format_amount(i64::MIN, "EUR"), "-92233720368547758.08 EUR");
        assert_eq!(format_amount(i64::MAX, "JPY"), "9223372036854775807 JPY");
        assert_eq!(
            format_amount_i128(i128::MIN, "EUR"),
            "-1701411834604692317316873037158841057.28 EUR"
        );
        assert_eq!(format_amount_i128(-250, "KWD"), "-0.250 KWD");
    }

    proptest! {
        /// What is formatted parses back to the same amount, in currencies with 2, 0 and 3
        /// decimals, up to the largest amount.
        #[test]
        fn format_then_parse_round_trips(
            minor in 1..=MAX_AMOUNT,
            code in prop_oneof![Just("EUR"), Just("JPY"), Just("BHD")],
        ) {
            let text = format_amount(minor, code);
            let number = text.strip_suffix(&format!(" {code}")).unwrap();
            prop_assert_eq!(parse_amount(number, code), Ok(minor));
            prop_assert_eq!(parse_amount(&number.replace('.', ","), code), Ok(minor));
        }

        /// No text makes parsing panic, and what parses is in range.
        #[test]
        fn parsing_any_text_is_safe(text in "\\PC{0,40}|[0-9.,-]{0,40}") {
            if let Ok(minor) = parse_amount(&text, "EUR") {
                prop_assert!((1..=MAX_AMOUNT).contains(&minor));
            }
        }

        /// No amount makes formatting panic.
        #[test]
        fn formatting_any_amount_is_safe(minor in any::<i128>(), code in "[A-Z]{3}") {
            let text = format_amount_i128(minor, &code);
            prop_assert!(text.ends_with(&code));
        }
    }
}

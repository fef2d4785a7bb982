//! How a person asks to be paid: a bank account (IBAN, with the account holder's name and
//! optionally a BIC), a Lightning invoice or address, or an https link to a payment page.
//! Kith moves no money: it checks what people type so that a typo is caught before anyone
//! pays into it, and builds what a banking or Lightning app reads to pay: the EPC "GiroCode"
//! QR payload (EPC069-12, SEPA credit transfer) and `lightning:` URIs.
//!
//! Every check trims and normalizes what it accepts (IBANs without spaces and in capitals,
//! Lightning invoices and addresses in small letters) and returns the normal form.

use super::currency;

/// Most characters of a name in a GiroCode (EPC069-12, "Beneficiary name").
pub const MAX_NAME: usize = 70;
/// Most characters of a payment reference (EPC069-12, "Unstructured remittance information").
pub const MAX_REFERENCE: usize = 140;
/// Most bytes of a payment link.
pub const MAX_LINK: usize = 512;
/// Most bytes of a whole GiroCode payload (EPC069-12).
pub const MAX_EPC_PAYLOAD: usize = 331;
/// The largest amount a GiroCode carries, in euro cents (999 999 999.99 euros).
pub const MAX_EPC_AMOUNT: i64 = 99_999_999_999;

/// How someone asks to be paid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    /// A bank transfer.
    Iban {
        /// The account, as [`check_iban`] returns it.
        iban: String,
        /// The account holder, as [`check_name`] returns it.
        name: String,
        /// The bank's BIC, as [`check_bic`] returns it, where one is needed.
        bic: Option<String>,
    },
    /// A Lightning invoice or Lightning address, as [`check_lightning`] returns it.
    Lightning(String),
    /// A payment page, as [`check_link`] returns it.
    Link(String),
}

/// Why a payment method or a GiroCode is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PayError {
    /// Not two letters, two digits and letters or digits, 15 to 34 in all.
    #[error("an IBAN is 15 to 34 letters and digits: country, check digits, account")]
    IbanFormat,
    /// The wrong length for the IBAN's country.
    #[error("an IBAN from {country} has {want} characters, not {got}")]
    IbanLength {
        /// The country code.
        country: String,
        /// Its IBAN length.
        want: usize,
        /// The length given.
        got: usize,
    },
    /// The check digits do not match: a character is mistyped.
    #[error("the IBAN's check digits do not match: a character is mistyped")]
    IbanChecksum,
    /// Not a BIC.
    #[error("a BIC is 8 or 11 letters and digits: bank, country, location and branch")]
    Bic,
    /// An empty or too long name, or one with control characters.
    #[error("a name must be 1 to {MAX_NAME} characters on one line")]
    Name,
    /// Neither a Lightning invoice nor a Lightning address.
    #[error("not a lightning invoice (lnbc...) or lightning address (name@domain)")]
    Lightning,
    /// Not an https link.
    #[error("a payment link must be an https:// address of at most {MAX_LINK} bytes")]
    Link,
    /// A too long reference, or one with control characters.
    #[error("a reference must be at most {MAX_REFERENCE} characters on one line")]
    Reference,
    /// A GiroCode in a currency other than the euro.
    #[error("a GiroCode carries euros only")]
    NotEuro,
    /// A GiroCode amount under a cent or over [`MAX_EPC_AMOUNT`].
    #[error("a GiroCode amount must be 0.01 to 999999999.99 euros")]
    EpcAmount,
    /// A GiroCode payload over [`MAX_EPC_PAYLOAD`] bytes.
    #[error("the GiroCode would be {0} bytes, more than {MAX_EPC_PAYLOAD}")]
    EpcTooLong(usize),
}

/// IBAN lengths per country, sorted by country (SWIFT IBAN registry, release 101).
#[rustfmt::skip]
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24), ("AE", 23), ("AL", 28), ("AT", 20), ("AZ", 28), ("BA", 20), ("BE", 16),
    ("BG", 22), ("BH", 22), ("BI", 27), ("BR", 29), ("BY", 28), ("CH", 21), ("CR", 22),
    ("CY", 28), ("CZ", 24), ("DE", 22), ("DJ", 27), ("DK", 18), ("DO", 28), ("EE", 20),
    ("EG", 29), ("ES", 24), ("FI", 18), ("FK", 18), ("FO", 18), ("FR", 27), ("GB", 22),
    ("GE", 22), ("GI", 23), ("GL", 18), ("GR", 27), ("GT", 28), ("HN", 28), ("HR", 21),
    ("HU", 28), ("IE", 22), ("IL", 23), ("IQ", 23), ("IS", 26), ("IT", 27), ("JO", 30),
    ("KW", 30), ("KZ", 20), ("LB", 28), ("LC", 32), ("LI", 21), ("LT", 20), ("LU", 20),
    ("LV", 21), ("LY", 25), ("MC", 27), ("MD", 24), ("ME", 22), ("MK", 19), ("MN", 20),
    ("MR", 27), ("MT", 31), ("MU", 30), ("NI", 28), ("NL", 18), ("NO", 15), ("OM", 23),
    ("PK", 24), ("PL", 28), ("PS", 29), ("PT", 25), ("QA", 29), ("RO", 24), ("RS", 22),
    ("RU", 33), ("SA", 24), ("SC", 31), ("SD", 18), ("SE", 24), ("SI", 19), ("SK", 24),
    ("SM", 27), ("SO", 23), ("ST", 25), ("SV", 28), ("TL", 23), ("TN", 24), ("TR", 26),
    ("UA", 29), ("VA", 22), ("VG", 24), ("XK", 20), ("YE", 30),
];

/// The IBAN length of a country in the registry.
fn iban_length(country: &str) -> Option<usize> {
    IBAN_LENGTHS
        .binary_search_by(|(c, _)| (*c).cmp(country))
        .ok()
        .and_then(|i| IBAN_LENGTHS.get(i))
        .map(|e| e.1)
}

/// ISO 7064 MOD 97-10 of an IBAN's letters and digits, the first four moved to the end and
/// letters counted as 10 to 35, one character at a time (no big integers).
fn iban_mod97(iban: &[u8]) -> u32 {
    let (head, tail) = iban.split_at(iban.len().min(4));
    tail.iter().chain(head).fold(0, |r, b| match b {
        b'0'..=b'9' => (r * 10 + u32::from(b - b'0')) % 97,
        _ => (r * 100 + u32::from(b.to_ascii_uppercase().wrapping_sub(b'A')) + 10) % 97,
    })
}

/// An IBAN, without spaces and in capitals ("DE89 3704 0044 0532 0130 00" is
/// "DE89370400440532013000"): a country code, two check digits and 11 to 30 letters and
/// digits; the country's length for the countries in the IBAN registry (every SEPA country
/// and more); and the ISO 7064 mod-97 checksum, which catches every mistyped character and
/// most swaps.
pub fn check_iban(s: &str) -> Result<String, PayError> {
    let iban: String =
        s.chars().filter(|c| !c.is_whitespace()).map(|c| c.to_ascii_uppercase()).collect();
    let b = iban.as_bytes();
    if !(15..=34).contains(&b.len())
        || !b.iter().all(u8::is_ascii_alphanumeric)
        || !b[..2].iter().all(u8::is_ascii_uppercase)
        || !b[2..4].iter().all(u8::is_ascii_digit)
    {
        return Err(PayError::IbanFormat);
    }
    let country = &iban[..2];
    if let Some(want) = iban_length(country).filter(|want| *want != b.len()) {
        return Err(PayError::IbanLength { country: country.to_owned(), want, got: b.len() });
    }
    if iban_mod97(b) != 1 {
        return Err(PayError::IbanChecksum);
    }
    Ok(iban)
}

/// A BIC (ISO 9362), without spaces and in capitals: a 4-letter bank code, a 2-letter
/// country code, a 2-character location and optionally a 3-character branch.
pub fn check_bic(s: &str) -> Result<String, PayError> {
    let bic: String =
        s.chars().filter(|c| !c.is_whitespace()).map(|c| c.to_ascii_uppercase()).collect();
    let b = bic.as_bytes();
    if !(b.len() == 8 || b.len() == 11)
        || !b[..6].iter().all(u8::is_ascii_uppercase)
        || !b[6..].iter().all(u8::is_ascii_alphanumeric)
    {
        return Err(PayError::Bic);
    }
    Ok(bic)
}

/// An account holder's name, trimmed: 1 to [`MAX_NAME`] characters (the GiroCode limit),
/// without control characters.
pub fn check_name(s: &str) -> Result<String, PayError> {
    let name = s.trim();
    let n = name.chars().count();
    if !(1..=MAX_NAME).contains(&n) || name.chars().any(char::is_control) {
        return Err(PayError::Name);
    }
    Ok(name.to_owned())
}

/// The bech32 alphabet, which a BOLT 11 invoice's data part is written in.
const BECH32: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

/// The shortest data part of a BOLT 11 invoice: a timestamp (7 characters), a signature
/// (104) and the checksum (6).
const MIN_BOLT11_DATA: usize = 7 + 104 + 6;

/// A Lightning invoice or Lightning address, in small letters, without a leading
/// `lightning:`:
///
/// - a BOLT 11 invoice: `ln`, a network (`bc` bitcoin, `tb` testnet, `tbs` signet, `bcrt`
///   regtest), an optional amount (digits and a multiplier), the separator `1` and the data
///   in the bech32 alphabet (at least a timestamp, a signature and a checksum), 20 to 2048
///   characters in all, all in small or all in capital letters (the checksum and signature
///   are the paying wallet's to verify);
/// - a Lightning address (LUD-16): `name@domain.tld`, the name of small letters, digits and
///   `-_.`, at most 320 characters.
pub fn check_lightning(s: &str) -> Result<String, PayError> {
    let s = s.trim();
    let s = match s.get(..10) {
        Some(scheme) if scheme.eq_ignore_ascii_case("lightning:") => &s[10..],
        _ => s,
    };
    if s.contains('@') {
        return lightning_address(s);
    }
    let (lower, upper) = (s.to_ascii_lowercase(), s.to_ascii_uppercase());
    if !(20..=2048).contains(&s.len()) || (s != lower && s != upper) {
        return Err(PayError::Lightning);
    }
    let Some((hrp, data)) = lower.rsplit_once('1') else { return Err(PayError::Lightning) };
    let amount = ["lnbcrt", "lntbs", "lnbc", "lntb"]
        .iter()
        .find_map(|network| hrp.strip_prefix(network))
        .ok_or(PayError::Lightning)?;
    if !lightning_amount(amount)
        || data.len() < MIN_BOLT11_DATA
        || !data.bytes().all(|b| BECH32.contains(&b))
    {
        return Err(PayError::Lightning);
    }
    Ok(lower)
}

/// A BOLT 11 amount: empty, or digits without a leading 0 and an optional multiplier (a
/// pico-bitcoin amount ends in 0).
fn lightning_amount(amount: &str) -> bool {
    let digits = amount.trim_end_matches(['m', 'u', 'n', 'p']);
    let multiplier = &amount[digits.len()..];
    if amount.is_empty() {
        return true;
    }
    !digits.is_empty()
        && !digits.starts_with('0')
        && digits.bytes().all(|b| b.is_ascii_digit())
        && multiplier.len() <= 1
        && (multiplier != "p" || digits.ends_with('0'))
}

/// A Lightning address (LUD-16), in small letters.
fn lightning_address(s: &str) -> Result<String, PayError> {
    let address = s.to_ascii_lowercase();
    let Some((user, domain)) = address.split_once('@') else { return Err(PayError::Lightning) };
    let user_ok = !user.is_empty()
        && user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if address.len() > 320 || !user_ok || !hostname(domain) {
        return Err(PayError::Lightning);
    }
    Ok(address)
}

/// A plausible internet host name: at least two labels of letters, digits and inner hyphens,
/// each 1 to 63 characters, at most 253 in all, and a top-level domain that is not all digits.
fn hostname(host: &str) -> bool {
    let labels: Vec<&str> = host.split('.').collect();
    host.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        && labels.last().is_some_and(|tld| !tld.bytes().all(|b| b.is_ascii_digit()))
}

/// A link to a payment page: `https://` only (not `http:`, `javascript:` or any other
/// scheme), a host name with a dot (letters, digits and hyphens: internationalized names in
/// their `xn--` form), an optional port, no user name before the host (which could disguise
/// it), no whitespace or control characters, at most [`MAX_LINK`] bytes. The scheme and host
/// are returned in small letters, the rest as given.
pub fn check_link(s: &str) -> Result<String, PayError> {
    let s = s.trim();
    if s.len() > MAX_LINK || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(PayError::Link);
    }
    let rest = match s.get(..8) {
        Some(scheme) if scheme.eq_ignore_ascii_case("https://") => &s[8..],
        _ => return Err(PayError::Link),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let host = match authority.split_once(':') {
        Some((host, port)) => {
            let port_ok = (1..=5).contains(&port.len())
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u16>().is_ok_and(|p| p > 0);
            if !port_ok {
                return Err(PayError::Link);
            }
            host
        }
        None => authority,
    };
    if !hostname(host) {
        return Err(PayError::Link);
    }
    Ok(format!("https://{}{path}", authority.to_ascii_lowercase()))
}

/// A payment reference ("what for"), trimmed: at most [`MAX_REFERENCE`] characters (the
/// GiroCode limit), on one line (a control character such as a line break would break the
/// GiroCode's lines). It may be empty.
pub fn check_reference(s: &str) -> Result<String, PayError> {
    let reference = s.trim();
    if reference.chars().count() > MAX_REFERENCE || reference.chars().any(char::is_control) {
        return Err(PayError::Reference);
    }
    Ok(reference.to_owned())
}

/// A payment method with every field checked and normalized.
pub fn check_method(method: &Method) -> Result<Method, PayError> {
    Ok(match method {
        Method::Iban { iban, name, bic } => Method::Iban {
            iban: check_iban(iban)?,
            name: check_name(name)?,
            bic: bic.as_deref().map(check_bic).transpose()?,
        },
        Method::Lightning(target) => Method::Lightning(check_lightning(target)?),
        Method::Link(link) => Method::Link(check_link(link)?),
    })
}

/// The payload of an EPC QR code ("GiroCode", EPC069-12) for a SEPA credit transfer, which
/// banking apps scan to fill in a transfer: version 002, UTF-8, identification SCT. Its lines
/// are: service tag `BCD`, version, character set, identification, BIC (may be empty in
/// version 002), name, IBAN, amount (`EUR12.50`, or empty to let the payer enter it),
/// purpose code (empty), structured creditor reference (empty), and the reference as
/// unstructured remittance text; empty lines at the end are left out. Every field is checked
/// as by the `check_` functions; `amount_minor` is in euro cents; the currency must be "EUR";
/// the whole payload is at most [`MAX_EPC_PAYLOAD`] bytes.
pub fn epc_payload(
    name: &str,
    iban: &str,
    bic: Option<&str>,
    amount_minor: Option<i64>,
    currency: &str,
    reference: &str,
) -> Result<String, PayError> {
    if currency != "EUR" {
        return Err(PayError::NotEuro);
    }
    let name = check_name(name)?;
    let iban = check_iban(iban)?;
    let bic = bic.map(check_bic).transpose()?.unwrap_or_default();
    let amount = match amount_minor {
        Some(a) if (1..=MAX_EPC_AMOUNT).contains(&a) => {
            let text = currency::format_amount(a, "EUR");
            format!("EUR{}", text.trim_end_matches(" EUR"))
        }
        Some(_) => return Err(PayError::EpcAmount),
        None => String::new(),
    };
    let reference = check_reference(reference)?;
    let mut lines = vec!["BCD", "002", "1", "SCT", &bic, &name, &iban, &amount, "", "", &reference];
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let payload = lines.join("\n");
    if payload.len() > MAX_EPC_PAYLOAD {
        return Err(PayError::EpcTooLong(payload.len()));
    }
    Ok(payload)
}

/// A `lightning:` URI for a checked invoice or address, as wallets open from a link or QR
/// code.
pub fn lightning_uri(target: &str) -> String {
    format!("lightning:{target}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The BOLT 11 examples "Please consider supporting this project" (no amount) and
    /// "1 cup coffee" (2500u).
    const DONATION: &str = concat!(
        "lnbc1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqq",
        "syqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpl2pkx2ctnv5sxxmmwwd5kgetjypeh2ursdae8g6twvus8g6rfwvs8q",
        "un0dfjkxaq9qrsgq357wnc5r2ueh7ck6q93dj32dlqnls087fxdwk8qakdyafkq3yap9us6v52vjjsrvywa6rt52c",
        "m9r9zqt8r2t7mlcwspyetp5h2tztugp9lfyql",
    );
    const COFFEE: &str = concat!(
        "lnbc2500u1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwz",
        "qfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5xysxxatsyp3k7enxv4jsxqzpu9qrsgquk0rl77nj30yxdy8j",
        "9vdx85fkpmdla2087ne0xh8nhedh8w27kyke0lp53ut353s06fv3qfegext0eh0ymjpf39tuven09sam30g4vgpfn",
        "a3rh",
    );

    #[test]
    fn iban_tables_are_sorted() {
        assert!(IBAN_LENGTHS.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(IBAN_LENGTHS.iter().all(|(_, n)| (15..=34).contains(n)));
    }

    #[test]
    fn valid_ibans_are_normalized() {
        assert_eq!(check_iban("DE89 3704 0044 0532 0130 00").unwrap(), "DE89370400440532013000");
        assert_eq!(check_iban(" gb29 nwbk 6016 1331 9268 19\n").unwrap(), "GB29NWBK60161331926819");
        assert_eq!(
            check_iban("DE89\u{a0}3704\u{a0}0044\u{a0}0532\u{a0}0130\u{a0}00").unwrap(),
            "DE89370400440532013000"
        );
        for iban in [
            "FR1420041010050500013M02606",
            "NL91ABNA0417164300",
            "BE68539007547034",
            "CH9300762011623852957",
            "AT611904300234573201",
            "NO9386011117947",
            "ES9121000418450200051332",
            "IT60X0542811101000000123456",
            "PL61109010140000071219812874",
            "SE4550000000058398257466",
            "IE29AIBK93115212345678",
            "PT50000201231234567890154",
            "LU280019400644750000",
            "FI2112345600000785",
            "DK5000400440116243",
            "CZ6508000000192000145399",
            "MT84MALT011000012345MTLCAST001S",
            "LC55HEMM000100010012001200023015",
            "RU0204452560040702810412345678901",
        ] {
            assert_eq!(check_iban(iban).as_deref(), Ok(iban));
        }
    }

    #[test]
    fn invalid_ibans_are_refused() {
        use PayError::*;
        let length = |country: &str, want, got| IbanLength { country: country.into(), want, got };
        for (iban, err) in [
            ("DE89 3704 0044 0532 0130 01", IbanChecksum),
            ("DE88 3704 0044 0532 0130 00", IbanChecksum),
            // Two neighbouring digits swapped.
            ("DE89 3704 0044 0532 0103 00", IbanChecksum),
            ("DE89 3704 0044 0532 0130 0", length("DE", 22, 21)),
            ("DE89 3704 0044 0532 0130 000", length("DE", 22, 23)),
            ("NO93 8601 1117 9471", length("NO", 15, 16)),
            ("", IbanFormat),
            ("DE89", IbanFormat),
            ("DE89 3704 0044 0532 0130 00 1234 5678 9012 3", IbanFormat),
            ("1E89370400440532013000", IbanFormat),
            ("DEX9370400440532013000", IbanFormat),
            ("DE89-3704-0044-0532-0130-00", IbanFormat),
            ("DE89370400440532013ä00", IbanFormat),
            ("ÄÖ89370400440532013000", IbanFormat),
        ] {
            assert_eq!(check_iban(iban), Err(err), "{iban:?}");
        }
    }

    /// An IBAN with the right check digits for `country` and `bban`.
    fn make_iban(country: &str, bban: &str) -> String {
        let r = iban_mod97(format!("{country}00{bban}").as_bytes());
        format!("{country}{:02}{bban}", 98 - r)
    }

    proptest! {
        /// Every IBAN with correct check digits and the country's length is accepted, however
        /// it is spaced and cased; changing any one character is caught.
        #[test]
        fn ibans_check_and_catch_a_mistyped_character(
            i in 0..IBAN_LENGTHS.len(),
            bban in "[0-9A-Z]{30}",
            at in 0usize..34,
            by in any::<u8>(),
        ) {
            let (country, len) = IBAN_LENGTHS[i];
            let iban = make_iban(country, &bban[..len - 4]);
            prop_assert_eq!(check_iban(&spaced(&iban.to_lowercase())), Ok(iban.clone()));
            // One character after the country replaced by another of its kind (a letter for
            // a digit changes the number's length, which mod 97 catches almost always, but
            // not always).
            let at = 2 + at % (len - 2);
            let mut typo = iban.clone().into_bytes();
            let (digits, letters): (&[u8], &[u8]) = (b"0123456789", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ");
            let kind = if typo[at].is_ascii_digit() { digits } else { letters };
            let pos = kind.iter().position(|b| *b == typo[at]).unwrap();
            typo[at] = kind[(pos + 1 + usize::from(by) % (kind.len() - 1)) % kind.len()];
            prop_assert_ne!(&typo, iban.as_bytes());
            prop_assert!(check_iban(std::str::from_utf8(&typo).unwrap()).is_err());
        }

        /// No text makes any check panic.
        #[test]
        fn no_text_makes_a_check_panic(s in "\\PC{0,80}|[ -~]{0,80}") {
            let _ = check_iban(&s);
            let _ = check_bic(&s);
            let _ = check_name(&s);
            let _ = check_lightning(&s);
            let _ = check_link(&s);
            let _ = check_reference(&s);
            let _ = epc_payload(&s, &s, Some(&s), Some(1), "EUR", &s);
        }
    }

    /// An IBAN in groups of four, as printed.
    fn spaced(iban: &str) -> String {
        let groups: Vec<String> =
            iban.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
        groups.join(" ")
    }

    #[test]
    fn bics() {
        assert_eq!(check_bic("COBADEFFXXX").unwrap(), "COBADEFFXXX");
        assert_eq!(check_bic(" cobadeff ").unwrap(), "COBADEFF");
        assert_eq!(check_bic("DEUT DE FF 500").unwrap(), "DEUTDEFF500");
        assert_eq!(check_bic("NWBKGB2L").unwrap(), "NWBKGB2L");
        for bic in [
            "",
            "COBADEF",
            "COBADEFFX",
            "COBADEFFXX",
            "COBADEFFXXXX",
            "C0BADEFF",
            "COBAD3FF",
            "COBADEF_",
            "ÇOBADEFF",
        ] {
            assert_eq!(check_bic(bic), Err(PayError::Bic), "{bic:?}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(check_name("  Anna Müller ").unwrap(), "Anna Müller");
        assert_eq!(check_name(&"é".repeat(70)).unwrap(), "é".repeat(70));
        for name in ["", "   ", &"a".repeat(71), "Anna\nMüller", "Anna\u{0}", "Anna\u{7f}"] {
            assert_eq!(check_name(name), Err(PayError::Name), "{name:?}");
        }
    }

    #[test]
    fn lightning_invoices() {
        assert_eq!(check_lightning(DONATION).unwrap(), DONATION);
        assert_eq!(check_lightning(COFFEE).unwrap(), COFFEE);
        assert_eq!(check_lightning(&COFFEE.to_uppercase()).unwrap(), COFFEE);
        assert_eq!(check_lightning(&format!("lightning:{COFFEE}")).unwrap(), COFFEE);
        assert_eq!(
            check_lightning(&format!(" LIGHTNING:{}", COFFEE.to_uppercase())).unwrap(),
            COFFEE
        );
        // Testnet, signet and regtest, with amounts.
        let data = &DONATION[5..];
        for hrp in ["lntb", "lntbs", "lnbcrt", "lnbc10m", "lntb20u", "lnbc1n", "lnbc10p", "lnbc3"] {
            let invoice = format!("{hrp}1{data}");
            assert_eq!(check_lightning(&invoice), Ok(invoice.clone()), "{hrp}");
        }
        let refused = [
            "".to_string(),
            "lnbc1qqqq".into(),
            // Bitcoin addresses, other networks, malformed amounts.
            "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq".into(),
            format!("lnltc1{data}"),
            format!("lnbc01{data}"),
            format!("lnbc10x1{data}"),
            format!("lnbc10mu1{data}"),
            format!("lnbc1p1{data}"),
            format!("lnbcm1{data}"),
            // Not the bech32 alphabet ('b', 'i', 'o' and '1' are not in it), mixed case.
            format!("lnbc1{}b", &data[..data.len() - 1]),
            format!("lnbc1{}o", &data[..data.len() - 1]),
            format!("lnbc1{}", data.to_uppercase()),
            // Too short a data part, too long an invoice.
            format!("lnbc1{}", &data[..100]),
            format!("lnbc1{}", "q".repeat(2044)),
            format!("http:{COFFEE}"),
            format!("{COFFEE} "),
        ];
        for invoice in refused.iter().take(refused.len() - 1) {
            assert_eq!(check_lightning(invoice), Err(PayError::Lightning), "{invoice:?}");
        }
        // Surrounding whitespace is trimmed.
        assert_eq!(check_lightning(refused.last().unwrap()).unwrap(), COFFEE);
    }

    #[test]
    fn lightning_addresses() {
        assert_eq!(check_lightning("alice@example.com").unwrap(), "alice@example.com");
        assert_eq!(
            check_lightning("Alice.B-c_9@Wallet.Example.ORG").unwrap(),
            "alice.b-c_9@wallet.example.org"
        );
        assert_eq!(check_lightning("lightning:bob@getalby.com").unwrap(), "bob@getalby.com");
        for address in [
            "@example.com",
            "alice@",
            "alice@localhost",
            "alice@example",
            "alice@example.",
            "alice@.com",
            "alice@-example.com",
            "alice@exa_mple.com",
            "alice@1.2.3.4",
            "ali ce@example.com",
            "ali+ce@example.com",
            "alice@@example.com",
            "alice@bob@example.com",
            "älice@example.com",
            "alice@exämple.com",
            &format!("{}@example.com", "a".repeat(310)),
        ] {
            assert_eq!(check_lightning(address), Err(PayError::Lightning), "{address:?}");
        }
        assert_eq!(lightning_uri("alice@example.com"), "lightning:alice@example.com");
        assert_eq!(lightning_uri(COFFEE), format!("lightning:{COFFEE}"));
    }

    #[test]
    fn links() {
        for (link, normal) in [
            ("https://example.com", "https://example.com"),
            ("https://paypal.me/anna/12.50EUR", "https://paypal.me/anna/12.50EUR"),
            (
                " HTTPS://Pay.Example.COM:8443/Path?x=Y#Z ",
                "https://pay.example.com:8443/Path?x=Y#Z",
            ),
            ("https://xn--bcher-kva.de/", "https://xn--bcher-kva.de/"),
            ("https://example.com/ünïcode", "https://example.com/ünïcode"),
        ] {
            assert_eq!(check_link(link).as_deref(), Ok(normal), "{link:?}");
        }
        for link in [
            "",
            "http://example.com",
            "javascript:alert(1)",
            "data:text/html,hi",
            "ftp://example.com",
            "https://",
            "https:///path",
            "https://localhost/",
            "https://example.com@evil.com/",
            "https://user:pw@example.com/",
            "https://bücher.de/",
            "https://[::1]/",
            "https://example.com:0/",
            "https://example.com:99999/",
            "https://example.com:/",
            "https://example.com/a b",
            "https://example.com/a\tb",
            "https://example.com/\u{0}",
            "https://example.com\\@evil.com",
            "example.com",
            &format!("https://example.com/{}", "a".repeat(500)),
        ] {
            assert_eq!(check_link(link), Err(PayError::Link), "{link:?}");
        }
    }

    #[test]
    fn references() {
        assert_eq!(check_reference("").unwrap(), "");
        assert_eq!(check_reference(" Pizza, Friday ").unwrap(), "Pizza, Friday");
        assert_eq!(check_reference(&"€".repeat(140)).unwrap(), "€".repeat(140));
        for reference in [&"a".repeat(141), "two\nlines", "a\rb", "tab\there"] {
            assert_eq!(check_reference(reference), Err(PayError::Reference), "{reference:?}");
        }
    }

    #[test]
    fn methods_are_checked_field_by_field() {
        let method = Method::Iban {
            iban: "de89 3704 0044 0532 0130 00".into(),
            name: " Anna ".into(),
            bic: Some("cobadeffxxx".into()),
        };
        assert_eq!(
            check_method(&method),
            Ok(Method::Iban {
                iban: "DE89370400440532013000".into(),
                name: "Anna".into(),
                bic: Some("COBADEFFXXX".into()),
            })
        );
        let no_name =
            Method::Iban { iban: "DE89370400440532013000".into(), name: "".into(), bic: None };
        assert_eq!(check_method(&no_name), Err(PayError::Name));
        assert_eq!(
            check_method(&Method::Lightning("Alice@Example.com".into())),
            Ok(Method::Lightning("alice@example.com".into()))
        );
        assert_eq!(check_method(&Method::Link("http://example.com".into())), Err(PayError::Link));
    }

    #[test]
    fn girocode_payload() {
        assert_eq!(
            epc_payload(
                "Red Cross",
                "DE89 3704 0044 0532 0130 00",
                Some("COBADEFFXXX"),
                Some(1250),
                "EUR",
                "Donation Friday"
            )
            .unwrap(),
            "BCD\n002\n1\nSCT\nCOBADEFFXXX\nRed Cross\nDE89370400440532013000\nEUR12.50\n\n\n\
             Donation Friday"
        );
        // No BIC, no amount, no reference: the empty lines at the end are left out.
        assert_eq!(
            epc_payload("Anna Müller", "DE89370400440532013000", None, None, "EUR", "").unwrap(),
            "BCD\n002\n1\nSCT\n\nAnna Müller\nDE89370400440532013000"
        );
        assert_eq!(
            epc_payload("Anna", "DE89370400440532013000", None, Some(1), "EUR", " ").unwrap(),
            "BCD\n002\n1\nSCT\n\nAnna\nDE89370400440532013000\nEUR0.01"
        );
        assert_eq!(
            epc_payload("Anna", "DE89370400440532013000", None, None, "EUR", "Pizza").unwrap(),
            "BCD\n002\n1\nSCT\n\nAnna\nDE89370400440532013000\n\n\n\nPizza"
        );
        assert_eq!(
            epc_payload("Anna", "DE89370400440532013000", None, Some(MAX_EPC_AMOUNT), "EUR", "")
                .unwrap(),
            "BCD\n002\n1\nSCT\n\nAnna\nDE89370400440532013000\nEUR999999999.99"
        );
    }

    #[test]
    fn girocode_refusals() {
        let iban = "DE89370400440532013000";
        let pay = |amount, currency: &str| epc_payload("Anna", iban, None, amount, currency, "");
        assert_eq!(pay(Some(100), "USD"), Err(PayError::NotEuro));
        assert_eq!(pay(None, "eur"), Err(PayError::NotEuro));
        assert_eq!(pay(Some(0), "EUR"), Err(PayError::EpcAmount));
        assert_eq!(pay(Some(-100), "EUR"), Err(PayError::EpcAmount));
        assert_eq!(pay(Some(MAX_EPC_AMOUNT + 1), "EUR"), Err(PayError::EpcAmount));
        assert_eq!(pay(Some(i64::MIN), "EUR"), Err(PayError::EpcAmount));
        assert_eq!(
            epc_payload("Anna", "DE89370400440532013001", None, None, "EUR", ""),
            Err(PayError::IbanChecksum)
        );
        assert_eq!(epc_payload("", iban, None, None, "EUR", ""), Err(PayError::Name));
        assert_eq!(epc_payload("Anna", iban, Some("COBA"), None, "EUR", ""), Err(PayError::Bic));
        assert_eq!(epc_payload("Anna", iban, None, None, "EUR", "a\nb"), Err(PayError::Reference));
        // Each field within its limit, but 70 four-byte characters and 140 more are too many
        // bytes for one code.
        let name = "𝄞".repeat(70);
        let reference = "𝄞".repeat(140);
        assert!(matches!(
            epc_payload(&name, iban, None, Some(100), "EUR", &reference),
            Err(PayError::EpcTooLong(_))
        ));
        // A long reference in plain letters fits.
        let longest = epc_payload(
            &"a".repeat(70),
            "MT84MALT011000012345MTLCAST001S",
            Some("COBADEFFXXX"),
            Some(MAX_EPC_AMOUNT),
            "EUR",
            &"b".repeat(140),
        )
        .unwrap();
        assert!(longest.len() <= MAX_EPC_PAYLOAD, "{}", longest.len());
    }

    #[test]
    fn error_messages_are_one_lowercase_line() {
        let errors = [
            PayError::IbanFormat,
            PayError::IbanLength { country: "DE".into(), want: 22, got: 21 },
            PayError::IbanChecksum,
            PayError::Bic,
            PayError::Name,
            PayError::Lightning,
            PayError::Link,
            PayError::Reference,
            PayError::NotEuro,
            PayError::EpcAmount,
            PayError::EpcTooLong(400),
        ];
        for e in errors {
            let text = e.to_string();
            assert!(!text.contains('\n') && !text.ends_with('.'), "{text}");
            assert!(text.starts_with(|c: char| c.is_lowercase()), "{text}");
        }
        assert_eq!(
            PayError::IbanLength { country: "DE".into(), want: 22, got: 21 }.to_string(),
            "an IBAN from DE has 22 characters, not 21"
        );
    }
}

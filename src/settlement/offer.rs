//! The `ilpLightningSettlement` sub-protocol: how two of our plugins agree, per account, to settle
//! by keysend and in millisatoshis. JS peers do not know it (they answer with an empty Response
//! or an error) and keep settling by invoices in satoshis.
//!
//! Each side sends its [`Offer`] (application/json) right after its `peeringRequest` — a client
//! also right after it authenticates, before IL-DCP, so that the server knows the asset scale
//! to tell it — and answers the peer's with its own:
//!
//! ```json
//! {"version":1,"keysendToken":"<64 hex>"|null,"assetScale":0|3,"wantInvoices":true|false}
//! ```
//!
//! - `keysendToken`: offered only when our node accepts keysend (GetInfo's feature bit 55). The
//!   peer pays us by keysend with it in custom record [`KEYSEND_TOKEN_RECORD`]; we credit the
//!   account whose token arrives.
//! - `assetScale`: 3 asks for millisatoshi ILP amounts; the account is in millisatoshis only when
//!   both sides said 3.
//! - `wantInvoices`: whether the sender needs our invoices to pay us: false when it can pay
//!   by keysend; true again, for the rest of the session, when a keysend to us failed with
//!   INCORRECT_PAYMENT_DETAILS (our node refuses keysend after all).

use std::fmt;

use super::book::KeysendToken;

/// The sub-protocol's name in BTP protocol data.
pub const SETTLEMENT_PROTOCOL: &str = "ilpLightningSettlement";

/// The custom record (TLV type) that carries the receiver's keysend token: odd (optional, as
/// TLV types an unknowing node may ignore must be), above LND's 65536 floor for application
/// records, and spelling "ILP1" in ASCII so it is easy to recognise in a node's database.
pub const KEYSEND_TOKEN_RECORD: u64 = 0x494C_5031;

/// The version this build speaks.
pub const VERSION: u64 = 1;

/// Longest offer read: a well-formed one is about 130 bytes.
const MAX_OFFER_LEN: usize = 4096;

/// One side's terms for an account.
#[derive(Clone, PartialEq, Eq)]
pub struct Offer {
    /// The token to put in keysend payments to the sender; `None`: do not keysend it.
    pub keysend_token: Option<KeysendToken>,
    /// The asset scale the sender wants for the account's ILP amounts (0 or 3).
    pub asset_scale: u8,
    /// Whether the sender needs invoices from us to pay us.
    pub want_invoices: bool,
}

impl fmt::Debug for Offer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token lets its holder credit the account with payments: never printed.
        f.debug_struct("Offer")
            .field("keysend_token", &self.keysend_token.map(|_| "…"))
            .field("asset_scale", &self.asset_scale)
            .field("want_invoices", &self.want_invoices)
            .finish()
    }
}

impl Offer {
    /// What a peer that does not speak the sub-protocol (a JS plugin) stands for: invoices, in
    /// satoshis.
    pub const LEGACY: Offer = Offer {
        keysend_token: None,
        asset_scale: 0,
        want_invoices: true,
    };

    /// The JSON text of the offer.
    pub fn to_json(&self) -> String {
        let token = match &self.keysend_token {
            Some(token) => format!("\"{}\"", hex::encode(token)),
            None => "null".to_owned(),
        };
        format!(
            "{{\"version\":{VERSION},\"keysendToken\":{token},\"assetScale\":{},\"wantInvoices\":{}}}",
            self.asset_scale, self.want_invoices
        )
    }

    /// Reads an offer. Unknown keys are ignored (a later version may add some); a missing
    /// `wantInvoices` means true, a missing `assetScale` 0, a missing token none.
    pub fn parse(text: &str) -> Result<Offer, OfferError> {
        if text.len() > MAX_OFFER_LEN {
            return Err(OfferError(format!(
                "{} bytes, more than the {MAX_OFFER_LEN} an offer may take",
                text.len()
            )));
        }
        let mut offer = Offer::LEGACY;
        for (key, value) in parse_flat_object(text)? {
            match (key.as_str(), value) {
                ("version", Value::Number(v)) if v >= 1 => {}
                ("version", other) => {
                    return Err(OfferError(format!("version {other:?} is not supported")))
                }
                ("keysendToken", Value::Null) => offer.keysend_token = None,
                ("keysendToken", Value::String(hex_token)) => {
                    let token = hex::decode(&hex_token)
                        .ok()
                        .and_then(|b| KeysendToken::try_from(b).ok())
                        .ok_or_else(|| OfferError("keysendToken is not 64 hex digits".into()))?;
                    offer.keysend_token = Some(token);
                }
                ("assetScale", Value::Number(scale)) => {
                    offer.asset_scale = u8::try_from(scale)
                        .ok()
                        .filter(|s| *s <= 3)
                        .ok_or_else(|| OfferError(format!("assetScale {scale} is not 0 to 3")))?;
                }
                ("wantInvoices", Value::Bool(want)) => offer.want_invoices = want,
                ("keysendToken" | "assetScale" | "wantInvoices", other) => {
                    return Err(OfferError(format!("{key} cannot be {other:?}")))
                }
                _ => {}
            }
        }
        Ok(offer)
    }
}

/// Why an offer could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferError(pub String);

impl fmt::Display for OfferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SETTLEMENT_PROTOCOL} offer: {}", self.0)
    }
}

impl std::error::Error for OfferError {}

/// A top-level value of the offer's object; nested objects and arrays are skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Null,
    Bool(bool),
    Number(u64),
    String(String),
    Other,
}

/// Deepest nesting skipped inside an offer.
const MAX_DEPTH: usize = 8;

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> OfferError {
        OfferError(format!("not JSON: {what} at byte {}", self.at))
    }

    fn skip_space(&mut self) {
        while self
            .bytes
            .get(self.at)
            .is_some_and(|b| b.is_ascii_whitespace())
        {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), OfferError> {
        self.skip_space();
        if self.bytes.get(self.at) == Some(&byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected '{}'", byte as char)))
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.bytes.get(self.at).copied()
    }

    fn string(&mut self) -> Result<String, OfferError> {
        self.expect(b'"')?;
        let mut out = String::new();
        loop {
            let Some(&byte) = self.bytes.get(self.at) else {
                return Err(self.error("unterminated string"));
            };
            self.at += 1;
            match byte {
                b'"' => return Ok(out),
                b'\\' => {
                    let escaped = *self
                        .bytes
                        .get(self.at)
                        .ok_or_else(|| self.error("unterminated escape"))?;
                    self.at += 1;
                    match escaped {
                        b'"' | b'\\' | b'/' => out.push(escaped as char),
                        b'n' => out.push('\n'),
                        b't' => out.push('\t'),
                        b'r' => out.push('\r'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'u' => {
                            let digits = self
                                .bytes
                                .get(self.at..self.at + 4)
                                .and_then(|d| std::str::from_utf8(d).ok())
                                .and_then(|d| u32::from_str_radix(d, 16).ok())
                                .ok_or_else(|| self.error("bad \\u escape"))?;
                            self.at += 4;
                            out.push(char::from_u32(digits).unwrap_or('\u{fffd}'));
                        }
                        _ => return Err(self.error("unknown escape")),
                    }
                }
                byte if byte < 0x20 => return Err(self.error("control character in a string")),
                _ => {
                    // Copy the whole UTF-8 sequence (the input is a &str, so it is valid).
                    let start = self.at - 1;
                    let mut end = self.at;
                    while self.bytes.get(end).is_some_and(|b| b & 0xC0 == 0x80) {
                        end += 1;
                    }
                    out.push_str(
                        std::str::from_utf8(&self.bytes[start..end]).unwrap_or("\u{fffd}"),
                    );
                    self.at = end;
                }
            }
        }
    }

    fn literal(&mut self, word: &str) -> bool {
        if self.bytes[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, OfferError> {
        match self.peek() {
            Some(b'"') => self.string().map(Value::String),
            Some(b'{') | Some(b'[') => {
                if depth >= MAX_DEPTH {
                    return Err(self.error("nested too deep"));
                }
                let close = if self.peek() == Some(b'{') {
                    b'}'
                } else {
                    b']'
                };
                let is_object = close == b'}';
                self.at += 1;
                if self.peek() == Some(close) {
                    self.at += 1;
                    return Ok(Value::Other);
                }
                loop {
                    if is_object {
                        self.string()?;
                        self.expect(b':')?;
                    }
                    self.value(depth + 1)?;
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b) if b == close => {
                            self.at += 1;
                            return Ok(Value::Other);
                        }
                        _ => return Err(self.error("expected ',' or the end")),
                    }
                }
            }
            Some(b't') if self.literal("true") => Ok(Value::Bool(true)),
            Some(b'f') if self.literal("false") => Ok(Value::Bool(false)),
            Some(b'n') if self.literal("null") => Ok(Value::Null),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.at;
                while self
                    .bytes
                    .get(self.at)
                    .is_some_and(|b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                {
                    self.at += 1;
                }
                let text = std::str::from_utf8(&self.bytes[start..self.at]).unwrap_or_default();
                // Whole non-negative numbers are what the offer uses; others are kept as such.
                Ok(text.parse().map(Value::Number).unwrap_or(Value::Other))
            }
            _ => Err(self.error("expected a value")),
        }
    }
}

/// The keys and values of a JSON object, in order.
fn parse_flat_object(text: &str) -> Result<Vec<(String, Value)>, OfferError> {
    let mut parser = Parser {
        bytes: text.as_bytes(),
        at: 0,
    };
    parser.expect(b'{')?;
    let mut fields = Vec::new();
    if parser.peek() == Some(b'}') {
        parser.at += 1;
    } else {
        loop {
            let key = parser.string()?;
            parser.expect(b':')?;
            let value = parser.value(1)?;
            fields.push((key, value));
            match parser.peek() {
                Some(b',') => parser.at += 1,
                Some(b'}') => {
                    parser.at += 1;
                    break;
                }
                _ => return Err(parser.error("expected ',' or '}'")),
            }
        }
    }
    if parser.peek().is_some() {
        return Err(parser.error("trailing characters"));
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_round_trip() {
        for offer in [
            Offer::LEGACY,
            Offer {
                keysend_token: Some([0xab; 32]),
                asset_scale: 3,
                want_invoices: false,
            },
        ] {
            assert_eq!(Offer::parse(&offer.to_json()).unwrap(), offer);
        }
    }

    #[test]
    fn unknown_keys_are_ignored_and_missing_ones_default() {
        let offer = Offer::parse(
            r#" { "version": 2, "later": {"a": [1, "x\"y", null]}, "assetScale": 3 } "#,
        )
        .unwrap();
        assert_eq!(
            offer,
            Offer {
                asset_scale: 3,
                ..Offer::LEGACY
            }
        );
        assert_eq!(Offer::parse("{}").unwrap(), Offer::LEGACY);
    }

    #[test]
    fn bad_offers_are_errors_not_panics() {
        for bad in [
            "",
            "[]",
            "{",
            r#"{"version":0}"#,
            r#"{"keysendToken":"abcd"}"#,
            r#"{"keysendToken":5}"#,
            r#"{"assetScale":9}"#,
            r#"{"assetScale":-1}"#,
            r#"{"wantInvoices":"yes"}"#,
            r#"{"a":1} x"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":tru}"#,
            &format!("{{\"a\":{}1{}}}", "[".repeat(20), "]".repeat(20)),
            &format!("{{\"a\":\"{}\"}}", "x".repeat(5000)),
        ] {
            assert!(Offer::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}

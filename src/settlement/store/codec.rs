//! The byte layout of the records the embedded store keeps: a version byte, then fixed-width
//! little-endian integers and length-prefixed byte strings. Reading checks every length against
//! what is left, so a damaged record is an error, never a panic or a huge allocation.

use std::collections::BTreeMap;

use super::super::book::{
    AccountBook, IssuedInvoice, IssuedState, PaymentIntent, PaymentRoute, Receipt,
};
use crate::lnd::{InvoiceCursor, PaymentHash, Preimage, PublicKey};

/// The layout version written first in every record.
const VERSION: u8 = 1;

/// A record that cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRecord(pub String);

struct Writer(Vec<u8>);

impl Writer {
    fn new() -> Self {
        Writer(vec![VERSION])
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u128(&mut self, v: u128) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i128(&mut self, v: i128) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, v: &[u8]) -> &mut Self {
        // Records hold short strings (names, invoices); a length over u32 cannot occur.
        self.0
            .extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_le_bytes());
        self.0.extend_from_slice(v);
        self
    }
}

struct Reader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Result<Self, CorruptRecord> {
        match bytes.split_first() {
            Some((&VERSION, rest)) => Ok(Reader { rest, what }),
            Some((v, _)) => Err(CorruptRecord(format!(
                "{what} record has layout version {v}, this build reads {VERSION}"
            ))),
            None => Err(CorruptRecord(format!("{what} record is empty"))),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], CorruptRecord> {
        if self.rest.len() < n {
            return Err(CorruptRecord(format!(
                "{} record is truncated ({} bytes left, {n} needed)",
                self.what,
                self.rest.len()
            )));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], CorruptRecord> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, CorruptRecord> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, CorruptRecord> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn u128(&mut self) -> Result<u128, CorruptRecord> {
        Ok(u128::from_le_bytes(self.array()?))
    }
    fn i128(&mut self) -> Result<i128, CorruptRecord> {
        Ok(i128::from_le_bytes(self.array()?))
    }
    fn bytes(&mut self) -> Result<&'a [u8], CorruptRecord> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        self.take(len)
    }
    fn string(&mut self) -> Result<String, CorruptRecord> {
        let what = self.what;
        String::from_utf8(self.bytes()?.to_vec())
            .map_err(|_| CorruptRecord(format!("{what} record holds a string that is not UTF-8")))
    }
    fn end(self) -> Result<(), CorruptRecord> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(CorruptRecord(format!(
                "{} record has {} unexpected trailing bytes",
                self.what,
                self.rest.len()
            )))
        }
    }
}

/// An account's persistent fields (reservations are not persistent).
pub fn encode_account(book: &AccountBook) -> Vec<u8> {
    let mut w = Writer::new();
    w.i128(book.receivable_msat)
        .i128(book.payable_msat)
        .u128(book.paying_msat)
        .u128(book.paid_msat)
        .u128(book.fees_msat)
        .u64(book.payments)
        .u128(book.received_msat)
        .u64(book.receipts);
    w.0
}

/// Reads [`encode_account`]'s bytes.
pub fn decode_account(bytes: &[u8]) -> Result<AccountBook, CorruptRecord> {
    let mut r = Reader::new(bytes, "account")?;
    let book = AccountBook {
        receivable_msat: r.i128()?,
        reserved_msat: 0,
        payable_msat: r.i128()?,
        paying_msat: r.u128()?,
        paid_msat: r.u128()?,
        fees_msat: r.u128()?,
        payments: r.u64()?,
        received_msat: r.u128()?,
        receipts: r.u64()?,
    };
    r.end()?;
    Ok(book)
}

const ROUTE_INVOICE: u8 = 1;
const ROUTE_KEYSEND: u8 = 2;

/// A payment intent.
pub fn encode_payment(intent: &PaymentIntent) -> Vec<u8> {
    let mut w = Writer::new();
    w.bytes(intent.account.as_bytes())
        .bytes(&intent.payment_hash.0)
        .u64(intent.amount_msat)
        .u64(intent.fee_limit_msat)
        .u64(intent.created_at_ms)
        .u8(u8::from(intent.explicit));
    match &intent.route {
        PaymentRoute::Invoice {
            payment_request,
            expires_at,
        } => {
            w.u8(ROUTE_INVOICE)
                .bytes(payment_request.as_bytes())
                .u64(*expires_at);
        }
        PaymentRoute::Keysend {
            destination,
            preimage,
            records,
        } => {
            w.u8(ROUTE_KEYSEND)
                .bytes(&destination.0)
                .bytes(&preimage.0)
                .u64(records.len() as u64);
            for (key, value) in records {
                w.u64(*key).bytes(value);
            }
        }
    }
    w.0
}

/// Reads [`encode_payment`]'s bytes.
pub fn decode_payment(bytes: &[u8]) -> Result<PaymentIntent, CorruptRecord> {
    let mut r = Reader::new(bytes, "payment")?;
    let account = r.string()?;
    let payment_hash = PaymentHash(fixed(r.bytes()?, "payment hash")?);
    let amount_msat = r.u64()?;
    let fee_limit_msat = r.u64()?;
    let created_at_ms = r.u64()?;
    let explicit = r.u8()? != 0;
    let route = match r.u8()? {
        ROUTE_INVOICE => PaymentRoute::Invoice {
            payment_request: r.string()?,
            expires_at: r.u64()?,
        },
        ROUTE_KEYSEND => {
            let destination = PublicKey(fixed(r.bytes()?, "keysend destination")?);
            let preimage = Preimage(fixed(r.bytes()?, "keysend preimage")?);
            let count = r.u64()?;
            let mut records = BTreeMap::new();
            for _ in 0..count {
                // Each record takes at least 12 bytes, so a bad count runs out of input
                // instead of allocating.
                let key = r.u64()?;
                records.insert(key, r.bytes()?.to_vec());
            }
            PaymentRoute::Keysend {
                destination,
                preimage,
                records,
            }
        }
        other => return Err(CorruptRecord(format!("unknown payment route {other}"))),
    };
    r.end()?;
    Ok(PaymentIntent {
        account,
        payment_hash,
        amount_msat,
        fee_limit_msat,
        route,
        created_at_ms,
        explicit,
    })
}

fn state_byte(state: IssuedState) -> u8 {
    match state {
        IssuedState::Open => 0,
        IssuedState::Paid => 1,
        IssuedState::Closed => 2,
    }
}

/// An issued invoice.
pub fn encode_invoice(invoice: &IssuedInvoice) -> Vec<u8> {
    let mut w = Writer::new();
    w.bytes(&invoice.payment_hash.0)
        .bytes(invoice.account.as_bytes())
        .bytes(invoice.payment_request.as_bytes())
        .u64(invoice.add_index)
        .u64(invoice.expires_at)
        .u8(state_byte(invoice.state));
    w.0
}

/// Reads [`encode_invoice`]'s bytes.
pub fn decode_invoice(bytes: &[u8]) -> Result<IssuedInvoice, CorruptRecord> {
    let mut r = Reader::new(bytes, "invoice")?;
    let invoice = IssuedInvoice {
        payment_hash: PaymentHash(fixed(r.bytes()?, "invoice hash")?),
        account: r.string()?,
        payment_request: r.string()?,
        add_index: r.u64()?,
        expires_at: r.u64()?,
        state: match r.u8()? {
            0 => IssuedState::Open,
            1 => IssuedState::Paid,
            2 => IssuedState::Closed,
            other => return Err(CorruptRecord(format!("unknown invoice state {other}"))),
        },
    };
    r.end()?;
    Ok(invoice)
}

/// A receipt waiting for the money handler.
pub fn encode_receipt(receipt: &Receipt) -> Vec<u8> {
    let mut w = Writer::new();
    w.bytes(&receipt.payment_hash.0)
        .bytes(receipt.account.as_bytes())
        .u64(receipt.amount_msat);
    w.0
}

/// Reads [`encode_receipt`]'s bytes.
pub fn decode_receipt(bytes: &[u8]) -> Result<Receipt, CorruptRecord> {
    let mut r = Reader::new(bytes, "receipt")?;
    let receipt = Receipt {
        payment_hash: PaymentHash(fixed(r.bytes()?, "receipt hash")?),
        account: r.string()?,
        amount_msat: r.u64()?,
    };
    r.end()?;
    Ok(receipt)
}

/// A paid invoice of a peer's: its expiry (the hash is the key).
pub fn encode_paid_invoice(expires_at: u64) -> Vec<u8> {
    let mut w = Writer::new();
    w.u64(expires_at);
    w.0
}

/// Reads [`encode_paid_invoice`]'s bytes.
pub fn decode_paid_invoice(bytes: &[u8]) -> Result<u64, CorruptRecord> {
    let mut r = Reader::new(bytes, "paid invoice")?;
    let expires_at = r.u64()?;
    r.end()?;
    Ok(expires_at)
}

/// The invoice cursor.
pub fn encode_cursor(cursor: &InvoiceCursor) -> Vec<u8> {
    let mut w = Writer::new();
    w.u64(cursor.add_index).u64(cursor.settle_index);
    w.0
}

/// Reads [`encode_cursor`]'s bytes.
pub fn decode_cursor(bytes: &[u8]) -> Result<InvoiceCursor, CorruptRecord> {
    let mut r = Reader::new(bytes, "cursor")?;
    let cursor = InvoiceCursor {
        add_index: r.u64()?,
        settle_index: r.u64()?,
    };
    r.end()?;
    Ok(cursor)
}

fn fixed<const N: usize>(bytes: &[u8], what: &str) -> Result<[u8; N], CorruptRecord> {
    <[u8; N]>::try_from(bytes)
        .map_err(|_| CorruptRecord(format!("{what} must be {N} bytes, got {}", bytes.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keysend_intent() -> PaymentIntent {
        PaymentIntent {
            account: "alice".into(),
            payment_hash: PaymentHash([3; 32]),
            amount_msat: 12_345,
            fee_limit_msat: 99,
            route: PaymentRoute::Keysend {
                destination: PublicKey([2; 33]),
                preimage: Preimage([4; 32]),
                records: BTreeMap::from([(65_537, b"token".to_vec())]),
            },
            created_at_ms: 1_700_000_000_000,
            explicit: true,
        }
    }

    #[test]
    fn records_round_trip() {
        let book = AccountBook {
            receivable_msat: -5,
            reserved_msat: 0,
            payable_msat: i128::MAX,
            paying_msat: 7,
            paid_msat: u128::MAX,
            fees_msat: 1,
            payments: 2,
            received_msat: 3,
            receipts: 4,
        };
        assert_eq!(decode_account(&encode_account(&book)).unwrap(), book);
        let intent = keysend_intent();
        assert_eq!(decode_payment(&encode_payment(&intent)).unwrap(), intent);
        let invoice_intent = PaymentIntent {
            route: PaymentRoute::Invoice {
                payment_request: "lnbcrt1xyz".into(),
                expires_at: 42,
            },
            ..intent
        };
        assert_eq!(
            decode_payment(&encode_payment(&invoice_intent)).unwrap(),
            invoice_intent
        );
        let invoice = IssuedInvoice {
            payment_hash: PaymentHash([9; 32]),
            account: "bob".into(),
            payment_request: "lnbcrt1abc".into(),
            add_index: 77,
            expires_at: 88,
            state: IssuedState::Paid,
        };
        assert_eq!(decode_invoice(&encode_invoice(&invoice)).unwrap(), invoice);
        let receipt = Receipt {
            payment_hash: PaymentHash([1; 32]),
            account: "carol".into(),
            amount_msat: 5,
        };
        assert_eq!(decode_receipt(&encode_receipt(&receipt)).unwrap(), receipt);
        let cursor = InvoiceCursor {
            add_index: 5,
            settle_index: 6,
        };
        assert_eq!(decode_cursor(&encode_cursor(&cursor)).unwrap(), cursor);
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let good = encode_payment(&keysend_intent());
        for cut in 0..good.len() {
            assert!(decode_payment(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode_payment(&trailing).is_err());
        let mut version = good;
        version[0] = 9;
        assert!(decode_payment(&version)
            .unwrap_err()
            .0
            .contains("layout version 9"));
        // A record count of u64::MAX runs out of input rather than allocating.
        let mut huge = Writer::new();
        huge.bytes(b"a")
            .bytes(&[0; 32])
            .u64(1)
            .u64(1)
            .u64(1)
            .u8(0)
            .u8(ROUTE_KEYSEND)
            .bytes(&[2; 33])
            .bytes(&[4; 32])
            .u64(u64::MAX);
        assert!(decode_payment(&huge.0).is_err());
        // A length prefix larger than the record.
        assert!(decode_account(&[VERSION, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}

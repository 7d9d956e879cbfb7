//! What a peer tells us over BTP to make settlement possible: its node's public key
//! (`peeringRequest`) and invoices to pay it with (`paymentRequest`), checked before they are
//! trusted, and the pool of its invoices we pay from.
//!
//! An invoice is decoded here, with lightning-invoice, not by asking LND: its signature, payee,
//! amount, network and expiry are checked locally, and its payment hash is known before it is
//! paid — so that the payment's intent can be recorded with the hash first.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::str::FromStr;

use bitcoin::hashes::Hash as _;
use lightning_invoice::{Bolt11Invoice, Bolt11SemanticError, Currency, ParseOrSemanticError};

use crate::lnd::{Network, PaymentHash, PublicKey};

/// The BTP sub-protocol that carries a node's identity key (text/plain, `<pubkey>` or
/// `<pubkey>@<host>`).
pub const PEERING_REQUEST: &str = "peeringRequest";
/// The BTP sub-protocol that carries one BOLT11 invoice (text/plain).
pub const PAYMENT_REQUEST: &str = "paymentRequest";

/// Most invoices kept per peer: more are refused, so a peer cannot grow our memory.
pub const MAX_PEER_INVOICES: usize = 100;

/// Why a peer's `peeringRequest` or `paymentRequest` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerRefused {
    /// The `peeringRequest` is not a node public key.
    BadPubkey(String),
    /// The peer announced another key earlier in this session.
    PubkeyChanged {
        /// The key announced first.
        linked: PublicKey,
        /// The new one.
        announced: PublicKey,
    },
    /// An invoice arrived before the peer said which node it is.
    NoPubkey,
    /// The invoice cannot be read (not BOLT11, bad checksum or signature, missing fields).
    Unreadable(String),
    /// The invoice pays another node than the one the peer announced.
    WrongPayee {
        /// The peer's node.
        expected: PublicKey,
        /// The invoice's payee.
        payee: PublicKey,
    },
    /// The invoice fixes an amount: the payer must choose it.
    NotZeroAmount {
        /// Its amount.
        amount_msat: u64,
    },
    /// The invoice is for another chain.
    WrongNetwork {
        /// Our node's chain.
        ours: String,
        /// The invoice's.
        invoice: String,
    },
    /// The invoice has expired or expires within the safety margin.
    ExpiresTooSoon {
        /// Its expiry, Unix seconds.
        expires_at: u64,
        /// Now, Unix seconds.
        now: u64,
    },
    /// We hold as many invoices of this peer as we keep.
    TooMany,
}

impl fmt::Display for PeerRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerRefused::BadPubkey(m) => write!(f, "peeringRequest is not a node public key: {m}"),
            PeerRefused::PubkeyChanged { linked, announced } => write!(
                f,
                "{linked} is already linked to this account for the session; refusing {announced}"
            ),
            PeerRefused::NoPubkey => {
                f.write_str("cannot accept an invoice: no public key linked to the account yet")
            }
            PeerRefused::Unreadable(m) => write!(f, "invalid invoice: {m}"),
            PeerRefused::WrongPayee { expected, payee } => write!(
                f,
                "invalid invoice: it pays {payee}, not the peer's node {expected}"
            ),
            PeerRefused::NotZeroAmount { amount_msat } => write!(
                f,
                "invalid invoice: amount of {amount_msat} msat does not allow paying an \
                 arbitrary amount"
            ),
            PeerRefused::WrongNetwork { ours, invoice } => write!(
                f,
                "invalid invoice: it is for {invoice}, our node is on {ours}"
            ),
            PeerRefused::ExpiresTooSoon { expires_at, now } => write!(
                f,
                "invalid invoice: it expires at {expires_at} (now {now}), too soon to be paid"
            ),
            PeerRefused::TooMany => write!(
                f,
                "refusing the invoice: {MAX_PEER_INVOICES} unpaid invoices of this peer are \
                 held already"
            ),
        }
    }
}

impl std::error::Error for PeerRefused {}

/// Reads a `peeringRequest`: `<66 hex digits>` or `<66 hex digits>@<host>` (the JS plugin's
/// form; the host is ignored: we do not open channels).
pub fn parse_peering_request(text: &str) -> Result<PublicKey, PeerRefused> {
    let key = text.split('@').next().unwrap_or_default().trim();
    PublicKey::from_hex(key).map_err(|e| PeerRefused::BadPubkey(e.to_string()))
}

/// An invoice of the peer's that passed every check.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerInvoice {
    /// The BOLT11 string, as received.
    pub payment_request: String,
    /// Its payment hash.
    pub payment_hash: PaymentHash,
    /// When it expires, Unix seconds.
    pub expires_at: u64,
}

impl fmt::Debug for PeerInvoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerInvoice")
            .field("payment_hash", &self.payment_hash.to_hex())
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

fn currency_of(network: &Network) -> Option<Currency> {
    match network {
        Network::Mainnet => Some(Currency::Bitcoin),
        Network::Testnet => Some(Currency::BitcoinTestnet),
        Network::Signet => Some(Currency::Signet),
        Network::Regtest => Some(Currency::Regtest),
        Network::Simnet => Some(Currency::Simnet),
        Network::Other(_) => None,
    }
}

/// Decodes and checks a `paymentRequest` from the peer whose node is `peer`: a valid signature,
/// payee `peer`, no amount, `network`, and at least `margin_secs` before it expires.
pub fn check_invoice(
    text: &str,
    peer: &PublicKey,
    network: &Network,
    now: u64,
    margin_secs: u64,
) -> Result<PeerInvoice, PeerRefused> {
    let text = text.trim();
    let invoice = Bolt11Invoice::from_str(text).map_err(|e| {
        PeerRefused::Unreadable(match e {
            ParseOrSemanticError::SemanticError(Bolt11SemanticError::InvalidSignature) => {
                "its signature does not verify".to_owned()
            }
            other => other.to_string(),
        })
    })?;
    let payee = PublicKey(invoice.get_payee_pub_key().serialize());
    if &payee != peer {
        return Err(PeerRefused::WrongPayee {
            expected: *peer,
            payee,
        });
    }
    if let Some(amount_msat) = invoice.amount_milli_satoshis() {
        return Err(PeerRefused::NotZeroAmount { amount_msat });
    }
    if currency_of(network) != Some(invoice.currency()) {
        return Err(PeerRefused::WrongNetwork {
            ours: network.to_string(),
            invoice: invoice.currency().to_string(),
        });
    }
    let expires_at = invoice
        .expires_at()
        .map(|d| d.as_secs())
        .unwrap_or(u64::MAX);
    if expires_at < now.saturating_add(margin_secs) {
        return Err(PeerRefused::ExpiresTooSoon { expires_at, now });
    }
    Ok(PeerInvoice {
        payment_request: text.to_owned(),
        payment_hash: PaymentHash(invoice.payment_hash().to_byte_array()),
        expires_at,
    })
}

/// The invoices a peer gave us, oldest first, each payment hash once.
#[derive(Debug, Default)]
pub struct InvoicePool {
    invoices: VecDeque<PeerInvoice>,
    hashes: HashSet<PaymentHash>,
}

impl InvoicePool {
    /// Adds an invoice; a repeat of one held is ignored. Refused when the pool is full.
    pub fn add(&mut self, invoice: PeerInvoice) -> Result<(), PeerRefused> {
        if self.hashes.contains(&invoice.payment_hash) {
            return Ok(());
        }
        if self.invoices.len() >= MAX_PEER_INVOICES {
            return Err(PeerRefused::TooMany);
        }
        self.hashes.insert(invoice.payment_hash);
        self.invoices.push_back(invoice);
        Ok(())
    }

    /// Takes the oldest invoice that does not expire within `margin_secs` of `now`, dropping
    /// those that do.
    pub fn take(&mut self, now: u64, margin_secs: u64) -> Option<PeerInvoice> {
        while let Some(invoice) = self.invoices.pop_front() {
            self.hashes.remove(&invoice.payment_hash);
            if invoice.expires_at >= now.saturating_add(margin_secs) {
                return Some(invoice);
            }
        }
        None
    }

    /// Returns an invoice that was taken and not paid (its payment failed for a reason that
    /// does not concern the invoice), to be used first next time.
    pub fn put_back(&mut self, invoice: PeerInvoice) {
        if self.hashes.insert(invoice.payment_hash) {
            self.invoices.push_front(invoice);
        }
    }

    /// Invoices held.
    pub fn len(&self) -> usize {
        self.invoices.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.invoices.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::{sha256, Hash};
    use bitcoin::secp256k1::{Secp256k1, SecretKey};
    use lightning_invoice::{InvoiceBuilder, PaymentSecret};
    use std::time::Duration;

    const NOW: u64 = 1_800_000_000;

    fn key(byte: u8) -> SecretKey {
        SecretKey::from_slice(&[byte; 32]).unwrap()
    }

    fn pubkey(byte: u8) -> PublicKey {
        PublicKey(
            bitcoin::secp256k1::PublicKey::from_secret_key(&Secp256k1::new(), &key(byte))
                .serialize(),
        )
    }

    fn invoice(
        currency: Currency,
        amount_msat: Option<u64>,
        signer: u8,
        expiry_secs: u64,
    ) -> String {
        let builder = InvoiceBuilder::new(currency)
            .description("ilp".into())
            .payment_hash(sha256::Hash::hash(&[signer]))
            .payment_secret(PaymentSecret([5; 32]))
            .duration_since_epoch(Duration::from_secs(NOW))
            .expiry_time(Duration::from_secs(expiry_secs))
            .min_final_cltv_expiry_delta(40);
        let builder = match amount_msat {
            Some(a) => builder.amount_milli_satoshis(a),
            None => builder,
        };
        builder
            .build_signed(|hash| Secp256k1::new().sign_ecdsa_recoverable(hash, &key(signer)))
            .unwrap()
            .to_string()
    }

    #[test]
    fn a_good_invoice_is_accepted_with_its_hash() {
        let text = invoice(Currency::Regtest, None, 1, 3600);
        let checked = check_invoice(&text, &pubkey(1), &Network::Regtest, NOW, 60).unwrap();
        assert_eq!(
            checked.payment_hash.0,
            sha256::Hash::hash(&[1]).to_byte_array()
        );
        assert_eq!(checked.expires_at, NOW + 3600);
    }

    #[test]
    fn every_bad_invoice_is_refused_with_its_reason() {
        let peer = pubkey(1);
        let check = |text: &str| check_invoice(text, &peer, &Network::Regtest, NOW, 60);
        assert!(matches!(
            check(&invoice(Currency::Regtest, None, 2, 3600)),
            Err(PeerRefused::WrongPayee { .. })
        ));
        assert_eq!(
            check(&invoice(Currency::Regtest, Some(1000), 1, 3600)),
            Err(PeerRefused::NotZeroAmount { amount_msat: 1000 })
        );
        assert!(matches!(
            check(&invoice(Currency::Bitcoin, None, 1, 3600)),
            Err(PeerRefused::WrongNetwork { .. })
        ));
        assert!(matches!(
            check(&invoice(Currency::Regtest, None, 1, 30)),
            Err(PeerRefused::ExpiresTooSoon { .. })
        ));
        assert!(matches!(
            check("lnbcrt1garbage"),
            Err(PeerRefused::Unreadable(_))
        ));
        // One character changed in the signature part: the checksum or signature fails.
        let mut tampered = invoice(Currency::Regtest, None, 1, 3600);
        let at = tampered.len() - 10;
        let replacement = if &tampered[at..at + 1] == "q" {
            "p"
        } else {
            "q"
        };
        tampered.replace_range(at..at + 1, replacement);
        assert!(matches!(check(&tampered), Err(PeerRefused::Unreadable(_))));
    }

    #[test]
    fn peering_requests_take_the_js_forms() {
        let hex = pubkey(1).to_hex();
        assert_eq!(parse_peering_request(&hex).unwrap(), pubkey(1));
        assert_eq!(
            parse_peering_request(&format!("{hex}@127.0.0.1:9735")).unwrap(),
            pubkey(1)
        );
        assert!(parse_peering_request("02zz").is_err());
        assert!(parse_peering_request("").is_err());
    }

    #[test]
    fn the_pool_hands_out_usable_invoices_oldest_first_and_stays_bounded() {
        let mut pool = InvoicePool::default();
        let mk = |byte: u8, expires_at: u64| PeerInvoice {
            payment_request: format!("inv{byte}"),
            payment_hash: PaymentHash([byte; 32]),
            expires_at,
        };
        pool.add(mk(1, NOW + 10)).unwrap();
        pool.add(mk(2, NOW + 3600)).unwrap();
        pool.add(mk(2, NOW + 3600)).unwrap();
        assert_eq!(pool.len(), 2);
        // The first expires within the margin: dropped, the second handed out.
        let taken = pool.take(NOW, 60).unwrap();
        assert_eq!(taken.payment_hash, PaymentHash([2; 32]));
        assert!(pool.take(NOW, 60).is_none());
        pool.put_back(taken.clone());
        assert_eq!(pool.take(NOW, 60), Some(taken));
        for byte in 0..MAX_PEER_INVOICES as u8 {
            pool.add(mk(byte, NOW + 3600)).unwrap();
        }
        assert_eq!(pool.add(mk(250, NOW + 3600)), Err(PeerRefused::TooMany));
    }
}

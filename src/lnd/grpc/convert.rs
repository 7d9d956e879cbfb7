//! LND's protobuf messages to this crate's types, checking what LND promises (32-byte hashes,
//! non-negative amounts) instead of trusting it.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::lnd::proto::lightning;
use crate::lnd::{
    FailureReason, Invoice, InvoiceHtlc, InvoiceState, LndError, Network, NodeInfo, PaymentHash,
    PaymentOutcome, PaymentStatus, Preimage, PublicKey,
};

fn non_negative(value: i64, what: &str) -> Result<u64, LndError> {
    u64::try_from(value).map_err(|_| LndError::BadResponse(format!("{what} is negative ({value})")))
}

pub fn node_info(info: &lightning::GetInfoResponse) -> Result<NodeInfo, LndError> {
    let network = match info.chains.first() {
        Some(chain) => Network::from_lnd_name(&chain.network),
        // LND before 0.10 only had the (now deprecated) testnet flag.
        None if info.testnet => Network::Testnet,
        None => Network::Mainnet,
    };
    Ok(NodeInfo {
        pubkey: PublicKey::from_hex(&info.identity_pubkey)?,
        network,
        alias: info.alias.clone(),
        version: info.version.clone(),
        accepts_keysend: info
            .features
            .keys()
            .any(|bit| *bit == KEYSEND_OPTIONAL_BIT || *bit == KEYSEND_REQUIRED_BIT),
    })
}

/// LND's feature bits for keysend (`lnwire.KeysendOptional` / `KeysendRequired`).
const KEYSEND_OPTIONAL_BIT: u32 = 55;
const KEYSEND_REQUIRED_BIT: u32 = 54;

pub fn invoice(inv: &lightning::Invoice) -> Result<Invoice, LndError> {
    let state = match inv.state.enum_value() {
        Ok(lightning::invoice::InvoiceState::OPEN) => InvoiceState::Open,
        Ok(lightning::invoice::InvoiceState::SETTLED) => InvoiceState::Settled,
        Ok(lightning::invoice::InvoiceState::CANCELED) => InvoiceState::Canceled,
        Ok(lightning::invoice::InvoiceState::ACCEPTED) => InvoiceState::Accepted,
        Err(other) => {
            return Err(LndError::BadResponse(format!(
                "unknown invoice state {other}"
            )))
        }
    };
    let preimage = if inv.r_preimage.is_empty() {
        None
    } else {
        Some(Preimage::from_slice(&inv.r_preimage, "invoice r_preimage")?)
    };
    let htlcs = inv
        .htlcs
        .iter()
        .map(|h| InvoiceHtlc {
            amount_msat: h.amt_msat,
            custom_records: h
                .custom_records
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect::<BTreeMap<_, _>>(),
        })
        .collect();
    // `value_msat` is set by LND whenever `value` is; older nodes may only fill `value`.
    let value_msat = if inv.value_msat != 0 {
        non_negative(inv.value_msat, "invoice value_msat")?
    } else {
        non_negative(inv.value, "invoice value")?.saturating_mul(1000)
    };
    Ok(Invoice {
        payment_hash: PaymentHash::from_slice(&inv.r_hash, "invoice r_hash")?,
        preimage,
        payment_request: inv.payment_request.clone(),
        memo: inv.memo.clone(),
        value_msat,
        state,
        amount_paid_msat: non_negative(inv.amt_paid_msat, "invoice amt_paid_msat")?,
        add_index: inv.add_index,
        settle_index: inv.settle_index,
        is_keysend: inv.is_keysend,
        htlcs,
        creation_date: non_negative(inv.creation_date, "invoice creation_date")?,
        settle_date: non_negative(inv.settle_date, "invoice settle_date")?,
        expiry: Duration::from_secs(non_negative(inv.expiry, "invoice expiry")?),
    })
}

pub fn failure_reason(reason: lightning::PaymentFailureReason) -> FailureReason {
    use lightning::PaymentFailureReason as R;
    match reason {
        R::FAILURE_REASON_TIMEOUT => FailureReason::Timeout,
        R::FAILURE_REASON_NO_ROUTE => FailureReason::NoRoute,
        R::FAILURE_REASON_ERROR => FailureReason::Error,
        R::FAILURE_REASON_INCORRECT_PAYMENT_DETAILS => FailureReason::IncorrectPaymentDetails,
        R::FAILURE_REASON_INSUFFICIENT_BALANCE => FailureReason::InsufficientBalance,
        R::FAILURE_REASON_CANCELED => FailureReason::Canceled,
        // A FAILED payment without a reason: LND's "error" is the closest.
        R::FAILURE_REASON_NONE => FailureReason::Error,
    }
}

/// One `lnrpc.Payment` update; `expected` is the hash we asked about, used when LND leaves the
/// field empty and checked when it does not.
pub fn payment(
    p: &lightning::Payment,
    expected: Option<&PaymentHash>,
) -> Result<PaymentOutcome, LndError> {
    let payment_hash = if p.payment_hash.is_empty() {
        *expected.ok_or_else(|| LndError::BadResponse("payment update without a hash".into()))?
    } else {
        let hash = PaymentHash::from_hex(&p.payment_hash, "payment_hash")?;
        if let Some(expected) = expected {
            if *expected != hash {
                return Err(LndError::BadResponse(format!(
                    "asked about payment {expected}, got an update for {hash}"
                )));
            }
        }
        hash
    };
    use lightning::payment::PaymentStatus as S;
    let status = match p.status.enum_value() {
        Ok(S::SUCCEEDED) => {
            let preimage = Preimage::from_hex(&p.payment_preimage, "payment_preimage")?;
            if preimage.payment_hash() != payment_hash {
                return Err(LndError::BadResponse(format!(
                    "payment {payment_hash} succeeded with a preimage that does not hash to it"
                )));
            }
            PaymentStatus::Succeeded {
                preimage,
                fee_msat: non_negative(p.fee_msat, "payment fee_msat")?,
                amount_msat: non_negative(p.value_msat, "payment value_msat")?,
            }
        }
        Ok(S::FAILED) => PaymentStatus::Failed(match p.failure_reason.enum_value() {
            Ok(reason) => failure_reason(reason),
            Err(code) => FailureReason::Unknown(code),
        }),
        Ok(S::IN_FLIGHT) | Ok(S::INITIATED) | Ok(S::UNKNOWN) => PaymentStatus::InFlight,
        Err(code) => {
            return Err(LndError::BadResponse(format!(
                "unknown payment status {code} for {payment_hash}"
            )))
        }
    };
    Ok(PaymentOutcome {
        payment_hash,
        status,
    })
}

/// A `PaymentStatus` value from the wire, for tests of unknown values.
#[cfg(test)]
fn status_from_i32(v: i32) -> protobuf::EnumOrUnknown<lightning::payment::PaymentStatus> {
    protobuf::EnumOrUnknown::from_i32(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightning::payment::PaymentStatus as S;

    fn pay(status: S) -> lightning::Payment {
        let preimage = Preimage([9; 32]);
        let mut p = lightning::Payment::new();
        p.payment_hash = preimage.payment_hash().to_hex();
        p.status = status.into();
        p.payment_preimage = preimage.to_hex();
        p.fee_msat = 1001;
        p.value_msat = 50_000;
        p
    }

    #[test]
    fn succeeded_payment() {
        let out = payment(&pay(S::SUCCEEDED), None).unwrap();
        assert_eq!(
            out.status,
            PaymentStatus::Succeeded {
                preimage: Preimage([9; 32]),
                fee_msat: 1001,
                amount_msat: 50_000
            }
        );
    }

    #[test]
    fn succeeded_with_wrong_preimage_is_refused() {
        let mut p = pay(S::SUCCEEDED);
        p.payment_preimage = Preimage([8; 32]).to_hex();
        assert!(matches!(payment(&p, None), Err(LndError::BadResponse(_))));
    }

    #[test]
    fn failed_and_in_flight() {
        let mut p = pay(S::FAILED);
        p.failure_reason = lightning::PaymentFailureReason::FAILURE_REASON_NO_ROUTE.into();
        assert_eq!(
            payment(&p, None).unwrap().status,
            PaymentStatus::Failed(FailureReason::NoRoute)
        );
        p.failure_reason = protobuf::EnumOrUnknown::from_i32(77);
        assert_eq!(
            payment(&p, None).unwrap().status,
            PaymentStatus::Failed(FailureReason::Unknown(77))
        );
        for s in [S::IN_FLIGHT, S::INITIATED] {
            assert_eq!(
                payment(&pay(s), None).unwrap().status,
                PaymentStatus::InFlight
            );
        }
        let mut p = pay(S::IN_FLIGHT);
        p.status = status_from_i32(42);
        assert!(payment(&p, None).is_err());
    }

    #[test]
    fn hash_checks() {
        let mut p = pay(S::IN_FLIGHT);
        let other = PaymentHash([1; 32]);
        assert!(payment(&p, Some(&other)).is_err());
        p.payment_hash.clear();
        assert_eq!(payment(&p, Some(&other)).unwrap().payment_hash, other);
        assert!(payment(&p, None).is_err());
    }

    #[test]
    fn invoice_conversion() {
        let mut inv = lightning::Invoice::new();
        inv.r_hash = vec![3; 32];
        inv.r_preimage = vec![4; 32];
        inv.state = lightning::invoice::InvoiceState::SETTLED.into();
        inv.amt_paid_msat = 12_345;
        inv.add_index = 7;
        inv.settle_index = 2;
        inv.is_keysend = true;
        inv.expiry = 3600;
        inv.creation_date = 1_700_000_000;
        let mut htlc = lightning::InvoiceHTLC::new();
        htlc.amt_msat = 12_345;
        htlc.custom_records.insert(5_482_373_484, vec![4; 32]);
        htlc.custom_records.insert(70_000, b"x".to_vec());
        inv.htlcs.push(htlc);
        let out = invoice(&inv).unwrap();
        assert_eq!(out.state, InvoiceState::Settled);
        assert_eq!(out.preimage, Some(Preimage([4; 32])));
        assert_eq!(out.amount_paid_msat, 12_345);
        assert_eq!(out.custom_records().len(), 2);
        assert_eq!(out.expiry, Duration::from_secs(3600));
        inv.r_hash = vec![3; 31];
        assert!(matches!(invoice(&inv), Err(LndError::BadResponse(_))));
        inv.r_hash = vec![3; 32];
        inv.amt_paid_msat = -1;
        assert!(matches!(invoice(&inv), Err(LndError::BadResponse(_))));
    }

    #[test]
    fn node_info_network() {
        let mut info = lightning::GetInfoResponse::new();
        info.identity_pubkey =
            "03eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619".into();
        let mut chain = lightning::Chain::new();
        chain.network = "regtest".into();
        info.chains.push(chain);
        info.alias = "alice".into();
        let out = node_info(&info).unwrap();
        assert_eq!(out.network, Network::Regtest);
        assert_eq!(out.alias, "alice");
        assert!(!out.accepts_keysend);
        info.features
            .insert(KEYSEND_OPTIONAL_BIT, lightning::Feature::new());
        assert!(node_info(&info).unwrap().accepts_keysend);
        info.identity_pubkey = "zz".into();
        assert!(node_info(&info).is_err());
    }
}

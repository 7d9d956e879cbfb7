//! Feature bits as LND reports them: the `map<uint32, Feature>` of GetInfo, invoices and
//! DecodePayReq, with LND's names (`lnwire/features.go`, `Features`) and its default sets
//! (`feature/default_sets.go`).

use std::collections::HashMap;

use crate::lnd::proto::lightning;

/// tlv-onion, required.
pub(crate) const TLV_ONION_REQUIRED: u32 = 8;
/// payment-addr, required.
pub(crate) const PAYMENT_ADDR_REQUIRED: u32 = 14;
/// multi-path-payments, optional.
pub(crate) const MPP_OPTIONAL: u32 = 17;
/// route-blinding, optional.
pub(crate) const ROUTE_BLINDING_OPTIONAL: u32 = 25;
/// keysend, optional: advertised only by a node started with `--accept-keysend`.
pub(crate) const KEYSEND_OPTIONAL: u32 = 55;

/// What LND puts in the invoices AddInvoice makes (`feature.SetInvoice`, the same on 0.18 to
/// 0.21): tlv-onion and payment-addr required, multi-path-payments and route-blinding optional.
pub(crate) const INVOICE_FEATURES: [u32; 4] = [
    TLV_ONION_REQUIRED,
    PAYMENT_ADDR_REQUIRED,
    MPP_OPTIONAL,
    ROUTE_BLINDING_OPTIONAL,
];

/// What a keysend invoice carries (`invoices/invoiceregistry.go` `processKeySend`: "tlv required").
pub(crate) const KEYSEND_INVOICE_FEATURES: [u32; 1] = [TLV_ONION_REQUIRED];

/// The node announcement set LND advertises in GetInfo with its default options
/// (`feature.SetNodeAnn`, without the bits that need an opt-in flag); keysend (55) is added by
/// nodes that accept it.
pub(crate) const NODE_FEATURES: [u32; 14] = [0, 5, 7, 8, 12, 14, 17, 23, 25, 27, 31, 35, 44, 2023];

/// LND's name of a feature bit (both bits of a pair share it); "unknown" otherwise, as
/// `lnwire.FeatureVector.Name` says.
fn name(bit: u32) -> Option<&'static str> {
    Some(match bit & !1 {
        0 => "data-loss-protect",
        4 => "upfront-shutdown-script",
        6 => "gossip-queries",
        8 => "tlv-onion",
        12 => "static-remote-key",
        14 => "payment-addr",
        16 => "multi-path-payments",
        18 => "wumbo-channels",
        20 => "anchor-commitments",
        22 => "anchors-zero-fee-htlc-tx",
        24 => "route-blinding",
        26 => "shutdown-any-segwit",
        30 => "amp",
        34 => "quiescence",
        44 => "explicit-commitment-type",
        46 => "scid-alias",
        48 => "payment-metadata",
        50 => "zero-conf",
        54 => "keysend",
        2022 => "script-enforced-lease",
        _ => return None,
    })
}

/// The `map<uint32, Feature>` LND sends for these bits (`lnrpc` `CreateRPCFeatures`).
pub(crate) fn feature_map(bits: impl IntoIterator<Item = u32>) -> HashMap<u32, lightning::Feature> {
    bits.into_iter()
        .map(|bit| {
            let mut feature = lightning::Feature::new();
            feature.name = name(bit).unwrap_or("unknown").to_string();
            feature.is_known = name(bit).is_some();
            feature.is_required = bit % 2 == 0;
            (bit, feature)
        })
        .collect()
}

/// The bits set in a BOLT11 invoice's feature field (little-endian bytes, as lightning-invoice
/// keeps them).
pub(crate) fn bits_of(le_flags: &[u8]) -> Vec<u32> {
    le_flags
        .iter()
        .enumerate()
        .flat_map(|(index, byte)| {
            (0..8)
                .filter(move |bit| byte & (1 << bit) != 0)
                .map(move |bit| (index * 8 + bit) as u32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_requiredness_follow_lnd() {
        let map = feature_map(INVOICE_FEATURES);
        assert_eq!(map[&8].name, "tlv-onion");
        assert!(map[&8].is_required && map[&8].is_known);
        assert_eq!(map[&17].name, "multi-path-payments");
        assert!(!map[&17].is_required);
        assert_eq!(map[&25].name, "route-blinding");
        let odd = feature_map([1001]);
        assert_eq!(odd[&1001].name, "unknown");
        assert!(!odd[&1001].is_known);
    }

    #[test]
    fn bits_are_read_little_endian() {
        // Bits 8, 14 (byte 1: 0x41), 17 (byte 2: 0x02), 25 (byte 3: 0x02).
        assert_eq!(bits_of(&[0, 0x41, 0x02, 0x02]), vec![8, 14, 17, 25]);
        assert!(bits_of(&[]).is_empty());
    }
}

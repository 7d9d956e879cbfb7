//! Property tests over random packets: what is built re-parses to itself, byte for byte, in a
//! buffer sized exactly; every truncation is refused; mutated packets never panic, and those
//! that still parse re-serialize to the same bytes (the encoding is canonical).

use ilp_plugin_lightning::btp::{self, ContentType, ProtocolData, ProtocolDataEntry};
use ilp_plugin_lightning::ilp::{self, ErrorCode, Timestamp};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

fn address() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            "g", "private", "example", "peer", "self", "test", "test1", "test2", "test3", "local",
        ]),
        prop::collection::vec("[A-Za-z0-9_~-]{1,12}", 1..5),
    )
        .prop_map(|(scheme, segments)| format!("{scheme}.{}", segments.join(".")))
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (Timestamp::MIN.unix_millis()..=Timestamp::MAX.unix_millis())
        .prop_map(|ms| Timestamp::from_unix_millis(ms).unwrap())
}

/// Data from empty to past 127 and 255 bytes, so short and long length forms both occur.
fn data() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..400)
}

#[derive(Debug, Clone)]
enum IlpFields {
    Prepare {
        amount: u64,
        expires_at: Timestamp,
        condition: [u8; 32],
        destination: String,
        data: Vec<u8>,
    },
    Fulfill {
        fulfillment: [u8; 32],
        data: Vec<u8>,
    },
    Reject {
        code: [u8; 3],
        triggered_by: String,
        message: String,
        data: Vec<u8>,
    },
}

fn ilp_fields() -> impl Strategy<Value = IlpFields> {
    prop_oneof![
        (
            any::<u64>(),
            timestamp(),
            any::<[u8; 32]>(),
            address(),
            data()
        )
            .prop_map(|(amount, expires_at, condition, destination, data)| {
                IlpFields::Prepare {
                    amount,
                    expires_at,
                    condition,
                    destination,
                    data,
                }
            }),
        (any::<[u8; 32]>(), data())
            .prop_map(|(fulfillment, data)| IlpFields::Fulfill { fulfillment, data }),
        (
            "[A-Z][0-9]{2}",
            prop_oneof![Just(String::new()), address()],
            ".{0,200}",
            data()
        )
            .prop_map(|(code, triggered_by, message, data)| IlpFields::Reject {
                code: code.as_bytes().try_into().unwrap(),
                triggered_by,
                message,
                data,
            }),
    ]
}

fn build_ilp(fields: &IlpFields) -> ilp::Packet<'_> {
    match fields {
        IlpFields::Prepare {
            amount,
            expires_at,
            condition,
            destination,
            data,
        } => ilp::PrepareBuilder {
            amount: *amount,
            expires_at: *expires_at,
            execution_condition: condition,
            destination,
            data,
        }
        .build()
        .unwrap()
        .into(),
        IlpFields::Fulfill { fulfillment, data } => ilp::FulfillBuilder { fulfillment, data }
            .build()
            .unwrap()
            .into(),
        IlpFields::Reject {
            code,
            triggered_by,
            message,
            data,
        } => ilp::RejectBuilder {
            code: ErrorCode::new(*code).unwrap(),
            triggered_by,
            message,
            data,
        }
        .build()
        .unwrap()
        .into(),
    }
}

/// Protocol data entries with distinct IA5 names; text and JSON data are UTF-8.
fn entries() -> impl Strategy<Value = Vec<(String, u8, Vec<u8>)>> {
    prop::collection::btree_map(
        "[\\x00-\\x7f]{0,12}",
        (
            prop_oneof![Just(0u8), Just(1), Just(2), any::<u8>()],
            prop::collection::vec(any::<u8>(), 0..200),
        ),
        0..6,
    )
    .prop_map(|map| {
        map.into_iter()
            .map(|(name, (content_type, data))| {
                let data = if ContentType::from_byte(content_type).is_text() {
                    String::from_utf8_lossy(&data).into_owned().into_bytes()
                } else {
                    data
                };
                (name, content_type, data)
            })
            .collect()
    })
}

#[derive(Debug, Clone)]
struct BtpFields {
    packet_type: btp::PacketType,
    request_id: u32,
    amount: u64,
    code: [u8; 3],
    name: String,
    triggered_at: Timestamp,
    data: Vec<u8>,
    entries: Vec<(String, u8, Vec<u8>)>,
}

fn btp_fields() -> impl Strategy<Value = BtpFields> {
    (
        prop::sample::select(vec![
            btp::PacketType::Response,
            btp::PacketType::Error,
            btp::PacketType::Message,
            btp::PacketType::Transfer,
        ]),
        any::<u32>(),
        any::<u64>(),
        "[\\x00-\\x7f]{3}",
        "[\\x00-\\x7f]{0,30}",
        timestamp(),
        prop::collection::vec(any::<u8>(), 0..300),
        entries(),
    )
        .prop_map(
            |(packet_type, request_id, amount, code, name, triggered_at, data, entries)| {
                BtpFields {
                    packet_type,
                    request_id,
                    amount,
                    code: code.as_bytes().try_into().unwrap(),
                    name,
                    triggered_at,
                    data,
                    entries,
                }
            },
        )
}

fn entry_views(fields: &BtpFields) -> Vec<ProtocolDataEntry<'_>> {
    fields
        .entries
        .iter()
        .map(|(name, content_type, data)| ProtocolDataEntry {
            name,
            content_type: ContentType::from_byte(*content_type),
            data,
        })
        .collect()
}

fn build_btp<'a>(fields: &'a BtpFields, entries: &'a [ProtocolDataEntry<'a>]) -> btp::Packet<'a> {
    let protocol_data = ProtocolData::new(entries).unwrap();
    match fields.packet_type {
        btp::PacketType::Response => btp::Response::new(fields.request_id, protocol_data).into(),
        btp::PacketType::Message => btp::Message::new(fields.request_id, protocol_data).into(),
        btp::PacketType::Transfer => {
            btp::Transfer::new(fields.request_id, fields.amount, protocol_data).into()
        }
        btp::PacketType::Error => btp::ErrorPacketBuilder {
            request_id: fields.request_id,
            code: btp::ErrorCode::new(fields.code).unwrap(),
            name: &fields.name,
            triggered_at: fields.triggered_at,
            data: &fields.data,
            protocol_data,
        }
        .build()
        .unwrap()
        .into(),
    }
}

/// A valid packet changed in one place: a byte replaced, inserted or removed.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Mutation::Remove),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutation: &Mutation) {
    match mutation {
        Mutation::Replace(i, b) => {
            let i = i.index(bytes.len());
            bytes[i] = *b;
        }
        Mutation::Insert(i, b) => {
            let i = i.index(bytes.len() + 1);
            bytes.insert(i, *b);
        }
        Mutation::Remove(i) => {
            let i = i.index(bytes.len());
            bytes.remove(i);
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn ilp_packets_round_trip(fields in ilp_fields()) {
        let packet = build_ilp(&fields);
        let bytes = packet.to_bytes();
        // Serialization sizes its buffer exactly, up front.
        prop_assert_eq!(bytes.capacity(), bytes.len());
        let parsed = ilp::Packet::parse(&bytes).unwrap();
        prop_assert_eq!(parsed, packet);
        prop_assert_eq!(parsed.to_bytes(), bytes.clone());
        let mut appended = vec![0xaa];
        parsed.write_to(&mut appended);
        prop_assert_eq!(&appended[1..], &bytes[..]);
    }

    #[test]
    fn ilp_truncations_are_refused(fields in ilp_fields()) {
        let bytes = build_ilp(&fields).to_bytes();
        for cut in 0..bytes.len() {
            let err = ilp::Packet::parse(&bytes[..cut]).unwrap_err();
            prop_assert!(err.offset <= cut, "cut {} offset {}", cut, err.offset);
        }
    }

    #[test]
    fn ilp_mutations_never_panic_and_stay_canonical(fields in ilp_fields(), change in mutation()) {
        let mut bytes = build_ilp(&fields).to_bytes();
        mutate(&mut bytes, &change);
        match ilp::Packet::parse(&bytes) {
            Ok(packet) => prop_assert_eq!(packet.to_bytes(), bytes),
            Err(err) => prop_assert!(err.offset <= bytes.len()),
        }
    }

    #[test]
    fn btp_packets_round_trip(fields in btp_fields()) {
        let entries = entry_views(&fields);
        let packet = build_btp(&fields, &entries);
        let bytes = packet.to_bytes();
        prop_assert_eq!(bytes.capacity(), bytes.len());
        prop_assert_eq!(packet.encoded_len(), bytes.len());
        let parsed = btp::Packet::parse(&bytes).unwrap();
        prop_assert_eq!(parsed, packet);
        prop_assert_eq!(parsed.request_id(), fields.request_id);
        prop_assert_eq!(parsed.protocol_data().iter().collect::<Vec<_>>(), entries.clone());
        for entry in &entries {
            prop_assert_eq!(parsed.protocol_data().get(entry.name), Some(*entry));
        }
        // A parsed packet re-serializes by copying its encoded protocol data.
        prop_assert_eq!(parsed.to_bytes(), bytes);
    }

    #[test]
    fn btp_truncations_are_refused(fields in btp_fields()) {
        let entries = entry_views(&fields);
        let bytes = build_btp(&fields, &entries).to_bytes();
        for cut in 0..bytes.len() {
            let err = btp::Packet::parse(&bytes[..cut]).unwrap_err();
            prop_assert!(err.offset <= cut, "cut {} offset {}", cut, err.offset);
        }
    }

    #[test]
    fn btp_mutations_never_panic_and_stay_canonical(fields in btp_fields(), change in mutation()) {
        let entries = entry_views(&fields);
        let mut bytes = build_btp(&fields, &entries).to_bytes();
        mutate(&mut bytes, &change);
        match btp::Packet::parse(&bytes) {
            // An Error's triggeredAt may now be a shorter GeneralizedTime, which is written back
            // in the 19-character form; everything else comes back byte for byte.
            Ok(btp::Packet::Error(error)) => {
                let again = error.to_bytes();
                prop_assert_eq!(btp::Packet::parse(&again).unwrap(), btp::Packet::Error(error));
            }
            Ok(packet) => prop_assert_eq!(packet.to_bytes(), bytes),
            Err(err) => prop_assert!(err.offset <= bytes.len()),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Err(err) = ilp::Packet::parse(&bytes) {
            prop_assert!(err.offset <= bytes.len());
        }
        if let Err(err) = btp::Packet::parse(&bytes) {
            prop_assert!(err.offset <= bytes.len());
        }
    }
}

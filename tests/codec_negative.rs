//! Bad input, refused with the exact error kind and offset: truncation, lengths past the end,
//! non-minimal and indefinite lengths, bad IA5/UTF-8, unknown types, short fulfillments, bad
//! addresses, bad timestamps, trailing bytes, duplicate protocol names. Builders refuse what
//! the parsers would.

use ilp_plugin_lightning::btp::{self, ProtocolData, ProtocolDataEntry};
use ilp_plugin_lightning::ilp::oer::{write_length, write_var_octets, OerErrorKind};
use ilp_plugin_lightning::ilp::{self, AddressError, Timestamp, TimestampError};

mod vectors;
use vectors::*;

// ---------------------------------------------------------------------------------------------
// ILP

fn ilp_err(bytes: &[u8]) -> (usize, ilp::ParseErrorKind) {
    let err = ilp::Packet::parse(bytes).expect_err("must not parse");
    (err.offset, err.kind)
}

fn eof(needed: usize, available: usize) -> OerErrorKind {
    OerErrorKind::UnexpectedEof { needed, available }
}

use ilp::ParseErrorKind as I;

/// Wraps `contents` in an ILP envelope of type `packet_type`, without checking anything.
fn ilp_envelope(packet_type: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![packet_type];
    write_length(&mut out, contents.len());
    out.extend_from_slice(contents);
    out
}

/// Prepare contents with any destination and data (no validation).
fn raw_prepare(expiry: &[u8], destination: &[u8], data: &[u8]) -> Vec<u8> {
    let mut contents = 107u64.to_be_bytes().to_vec();
    contents.extend_from_slice(expiry);
    contents.extend_from_slice(&[7; 32]);
    write_var_octets(&mut contents, destination);
    write_var_octets(&mut contents, data);
    ilp_envelope(12, &contents)
}

#[test]
fn ilp_truncated_input() {
    assert_eq!(ilp_err(&[]), (0, I::Oer(eof(1, 0))));
    assert_eq!(ilp_err(&[12]), (1, I::Oer(eof(1, 0))));
    let prepare = unhex(ILP_PREPARE);
    // The envelope announces 0x68 = 104 bytes.
    assert_eq!(
        ilp_err(&prepare[..50]),
        (
            1,
            I::Oer(OerErrorKind::LengthPastEnd {
                length: 104,
                available: 48
            })
        )
    );
    // A consistent envelope around contents that stop inside expiresAt.
    let mut contents = 107u64.to_be_bytes().to_vec();
    contents.extend_from_slice(b"20");
    assert_eq!(
        ilp_err(&ilp_envelope(12, &contents)),
        (10, I::Oer(eof(17, 2)))
    );
    // Long-form envelope cut inside its length bytes.
    assert_eq!(ilp_err(&[12, 0x82, 0x01]), (2, I::Oer(eof(2, 1))));
}

#[test]
fn ilp_lengths_past_the_end() {
    // The data length of the §1.7 Prepare (offset 73) says 33; 32 bytes follow.
    let mut prepare = unhex(ILP_PREPARE);
    prepare[73] = 0x21;
    assert_eq!(
        ilp_err(&prepare),
        (
            73,
            I::Oer(OerErrorKind::LengthPastEnd {
                length: 33,
                available: 32
            })
        )
    );
    // A destination length that runs past the envelope, though not past the input.
    let mut prepare = unhex(ILP_PREPARE);
    prepare[59] = 0x50;
    assert_eq!(
        ilp_err(&prepare),
        (
            59,
            I::Oer(OerErrorKind::LengthPastEnd {
                length: 0x50,
                available: 46
            })
        )
    );
    // An 8-byte length no platform can address.
    assert_eq!(
        ilp_err(&[13, 0x88, 0xff, 0, 0, 0, 0, 0, 0, 0]),
        (
            1,
            I::Oer(OerErrorKind::LengthPastEnd {
                length: 0xff00_0000_0000_0000,
                available: 0
            })
        )
    );
}

#[test]
fn ilp_non_minimal_and_indefinite_lengths() {
    let prepare = unhex(ILP_PREPARE);
    let mut long_form = vec![12, 0x81, 0x68];
    long_form.extend_from_slice(&prepare[2..]);
    assert_eq!(
        ilp_err(&long_form),
        (1, I::Oer(OerErrorKind::NonMinimalLength))
    );
    let mut leading_zero = vec![12, 0x82, 0x00, 0x68];
    leading_zero.extend_from_slice(&prepare[2..]);
    assert_eq!(
        ilp_err(&leading_zero),
        (1, I::Oer(OerErrorKind::NonMinimalLength))
    );
    assert_eq!(
        ilp_err(&[13, 0x80]),
        (1, I::Oer(OerErrorKind::IndefiniteLength))
    );
    assert_eq!(
        ilp_err(&[13, 0x89, 1, 1, 1, 1, 1, 1, 1, 1, 1]),
        (1, I::Oer(OerErrorKind::LengthOfLengthTooLarge(9)))
    );
    // Inside the contents: the data length of the Prepare in long form.
    let mut contents = prepare[2..73].to_vec();
    contents.extend_from_slice(&[0x81, 0x20]);
    contents.extend_from_slice(&prepare[74..]);
    assert_eq!(
        ilp_err(&ilp_envelope(12, &contents)),
        (73, I::Oer(OerErrorKind::NonMinimalLength))
    );
}

#[test]
fn ilp_bad_text() {
    // Reject: code at 2, triggeredBy prefix at 5, message prefix at 20.
    let mut reject = unhex(ILP_REJECT);
    reject[21] = 0xff;
    assert_eq!(ilp_err(&reject), (20, I::InvalidUtf8 { field: "message" }));
    let mut reject = unhex(ILP_REJECT);
    reject[3] = 0x80;
    assert_eq!(ilp_err(&reject), (2, I::InvalidErrorCode));
    // A non-ASCII byte in the triggeredBy address.
    let mut reject = unhex(ILP_REJECT);
    reject[6 + 9] = 0xc3;
    assert_eq!(
        ilp_err(&reject),
        (
            5,
            I::InvalidAddress {
                field: "triggeredBy",
                error: AddressError::InvalidCharacter(9)
            }
        )
    );
}

#[test]
fn ilp_unknown_and_unexpected_types() {
    let mut prepare = unhex(ILP_PREPARE);
    prepare[0] = 11;
    assert_eq!(ilp_err(&prepare), (0, I::UnknownPacketType(11)));
    prepare[0] = 6;
    assert_eq!(ilp_err(&prepare), (0, I::UnknownPacketType(6)));
    let fulfill = unhex(ILP_FULFILL);
    let err = ilp::Prepare::parse(&fulfill).unwrap_err();
    assert_eq!(
        (err.offset, err.kind),
        (
            0,
            I::UnexpectedPacketType {
                expected: ilp::PacketType::Prepare,
                found: ilp::PacketType::Fulfill
            }
        )
    );
    assert_eq!(
        err.to_string(),
        "invalid ILP packet: expected a Prepare, found a Fulfill at offset 0"
    );
}

#[test]
fn ilp_short_fulfillment() {
    let short = ilp_envelope(13, &[9; 16]);
    assert_eq!(ilp_err(&short), (2, I::Oer(eof(32, 16))));
    // 32 bytes of fulfillment but no data field.
    let no_data = ilp_envelope(13, &[9; 32]);
    assert_eq!(ilp_err(&no_data), (34, I::Oer(eof(1, 0))));
}

#[test]
fn ilp_bad_addresses() {
    let expiry = b"20171223012140549";
    for (destination, error) in [
        (&b""[..], AddressError::Empty),
        (b"example", AddressError::MissingSegment),
        (b"bogus.alice", AddressError::UnknownScheme),
        (b"example.al!ce", AddressError::InvalidCharacter(10)),
        (b"example..alice", AddressError::EmptySegment(8)),
        (b"example.alice.", AddressError::EmptySegment(14)),
    ] {
        assert_eq!(
            ilp_err(&raw_prepare(expiry, destination, b"")),
            (
                59,
                I::InvalidAddress {
                    field: "destination",
                    error
                }
            ),
            "{}",
            String::from_utf8_lossy(destination)
        );
    }
    // The long address makes the envelope long-form (3 bytes): the destination is at 61.
    let long = format!("g.{}", "a".repeat(1022));
    assert_eq!(
        ilp_err(&raw_prepare(expiry, long.as_bytes(), b"")),
        (
            61,
            I::InvalidAddress {
                field: "destination",
                error: AddressError::TooLong(1024)
            }
        )
    );
}

#[test]
fn ilp_bad_timestamps() {
    assert_eq!(
        ilp_err(&raw_prepare(b"2017122301214054x", b"g.a", b"")),
        (10, I::InvalidTimestamp(TimestampError::BadCharacter(16)))
    );
    assert_eq!(
        ilp_err(&raw_prepare(b"20171323012140549", b"g.a", b"")),
        (
            10,
            I::InvalidTimestamp(TimestampError::FieldOutOfRange("month"))
        )
    );
    // RFC 30: leap seconds are smeared, :60 is invalid.
    assert_eq!(
        ilp_err(&raw_prepare(b"20161231235960852", b"g.a", b"")),
        (
            10,
            I::InvalidTimestamp(TimestampError::FieldOutOfRange("second"))
        )
    );
}

#[test]
fn ilp_trailing_bytes() {
    let mut prepare = unhex(ILP_PREPARE);
    prepare.push(0);
    assert_eq!(ilp_err(&prepare), (106, I::TrailingBytes { count: 1 }));
    // Inside the envelope, after the last field.
    let fulfill = unhex(ILP_FULFILL);
    let mut contents = fulfill[2..].to_vec();
    contents.extend_from_slice(&[1, 2]);
    assert_eq!(
        ilp_err(&ilp_envelope(13, &contents)),
        (67, I::TrailingBytes { count: 2 })
    );
}

#[test]
fn ilp_fields_too_long() {
    // A long-form envelope (3 bytes), then 57 bytes of fixed fields and `03 g.a`: data at 65.
    let data = vec![0u8; 32768];
    assert_eq!(
        ilp_err(&raw_prepare(b"20171223012140549", b"g.a", &data)),
        (
            65,
            I::TooLong {
                field: "data",
                len: 32768,
                max: 32767
            }
        )
    );
    let condition = [0u8; 32];
    let build = |destination, data| {
        ilp::PrepareBuilder {
            amount: 1,
            expires_at: Timestamp::MIN,
            execution_condition: &condition,
            destination,
            data,
        }
        .build()
    };
    assert_eq!(
        build("g.a", &data),
        Err(ilp::BuildError::TooLong {
            field: "data",
            len: 32768,
            max: 32767
        })
    );
    assert_eq!(
        build("g", b""),
        Err(ilp::BuildError::InvalidAddress {
            field: "destination",
            error: AddressError::MissingSegment
        })
    );
    let message = "m".repeat(8192);
    assert_eq!(
        ilp::RejectBuilder {
            code: ilp::ErrorCode::F00_BAD_REQUEST,
            triggered_by: "",
            message: &message,
            data: b"",
        }
        .build(),
        Err(ilp::BuildError::TooLong {
            field: "message",
            len: 8192,
            max: 8191
        })
    );
    assert_eq!(
        ilp::RejectBuilder {
            code: ilp::ErrorCode::F00_BAD_REQUEST,
            triggered_by: "nope",
            message: "",
            data: b"",
        }
        .build(),
        Err(ilp::BuildError::InvalidAddress {
            field: "triggeredBy",
            error: AddressError::UnknownScheme
        })
    );
}

#[test]
fn ildcp_malformed_responses() {
    use ilp::ildcp::{IldcpError, IldcpResponse, MalformedResponse};
    let good = unhex(ILDCP_RESPONSE);
    // After the envelope (2), the fulfillment (32) and the data's length prefix (1).
    let data = &good[35..];
    let mut trailing = data.to_vec();
    trailing.push(0);
    assert_eq!(
        IldcpResponse::parse(&trailing),
        Err(IldcpError::Malformed {
            offset: data.len(),
            reason: MalformedResponse::TrailingBytes(1)
        })
    );
    assert_eq!(
        IldcpResponse::parse(&data[..15]),
        Err(IldcpError::Malformed {
            offset: 15,
            reason: MalformedResponse::Oer(eof(1, 0))
        })
    );
    let mut bad_code = data.to_vec();
    *bad_code.last_mut().unwrap() = 0xff;
    assert_eq!(
        IldcpResponse::parse(&bad_code),
        Err(IldcpError::Malformed {
            offset: 16,
            reason: MalformedResponse::InvalidAssetCode
        })
    );
    assert_eq!(
        IldcpResponse::from_reply(&unhex(ILDCP_REQUEST)),
        Err(IldcpError::UnexpectedPrepare)
    );
}

// ---------------------------------------------------------------------------------------------
// BTP

use btp::ParseErrorKind as B;

fn btp_err(bytes: &[u8]) -> (usize, btp::ParseErrorKind) {
    let err = btp::Packet::parse(bytes).expect_err("must not parse");
    (err.offset, err.kind)
}

/// Wraps `contents` in a BTP envelope with request id 1, without checking anything.
fn btp_envelope(packet_type: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![packet_type, 0, 0, 0, 1];
    write_length(&mut out, contents.len());
    out.extend_from_slice(contents);
    out
}

/// Error contents: code, name, triggeredAt, data, then no protocol data.
fn raw_error(code: &[u8; 3], name: &[u8], triggered_at: &[u8]) -> Vec<u8> {
    let mut contents = code.to_vec();
    write_var_octets(&mut contents, name);
    write_var_octets(&mut contents, triggered_at);
    write_var_octets(&mut contents, b"");
    contents.extend_from_slice(&[1, 0]);
    btp_envelope(2, &contents)
}

#[test]
fn btp_truncated_input() {
    assert_eq!(btp_err(&[]), (0, B::Oer(eof(1, 0))));
    assert_eq!(btp_err(&[6, 0, 0]), (1, B::Oer(eof(4, 2))));
    assert_eq!(btp_err(&[6, 0, 0, 0, 1]), (5, B::Oer(eof(1, 0))));
    // Transfer: the amount needs 8 bytes.
    assert_eq!(
        btp_err(&btp_envelope(7, &[0, 0, 0])),
        (6, B::Oer(eof(8, 3)))
    );
    // The count promises 2 entries; one follows.
    assert_eq!(
        btp_err(&btp_envelope(6, &[1, 2, 0, 0, 0])),
        (11, B::Oer(eof(1, 0)))
    );
    // A huge count with no entries fails at the first missing byte, without allocating.
    assert_eq!(
        btp_err(&btp_envelope(
            6,
            &[8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        )),
        (15, B::Oer(eof(1, 0)))
    );
    // interledger-rs fuzz_9: the count is there, its entry is not.
    assert_eq!(
        btp_err(&[6, 0, 0, 1, 1, 6, 1, 0]),
        (
            5,
            B::Oer(OerErrorKind::LengthPastEnd {
                length: 6,
                available: 2
            })
        )
    );
}

#[test]
fn btp_lengths_past_the_end() {
    // interledger-rs fuzz_3.
    assert_eq!(
        btp_err(&[1, 1, 65, 0, 0, 9, 1, 0]),
        (
            5,
            B::Oer(OerErrorKind::LengthPastEnd {
                length: 9,
                available: 2
            })
        )
    );
    // An entry's data length past the envelope's end.
    assert_eq!(
        btp_err(&btp_envelope(6, &[1, 1, 1, b'a', 0, 5, 1])),
        (
            11,
            B::Oer(OerErrorKind::LengthPastEnd {
                length: 5,
                available: 1
            })
        )
    );
    // interledger-rs fuzz_8: a 4-byte length of 0x84000... that once sized a 2 GB allocation.
    assert_eq!(
        btp_err(&[1, 1, 0, 6, 1, 132, 132, 0, 91, 255, 50]),
        (
            5,
            B::Oer(OerErrorKind::LengthPastEnd {
                length: 0x8400_5bff,
                available: 1
            })
        )
    );
}

#[test]
fn btp_non_minimal_and_indefinite_lengths() {
    // interledger-rs fuzz_12: a count's length prefix in long form.
    assert_eq!(
        btp_err(&[6, 0, 0, 1, 1, 7, 129, 1, 1, 1, 6, 1, 0]),
        (6, B::Oer(OerErrorKind::NonMinimalLength))
    );
    // interledger-rs fuzz_13: a count with a leading zero byte.
    assert_eq!(
        btp_err(&[6, 0, 0, 0, 0, 6, 2, 0, 1, 0, 1, 0]),
        (6, B::Oer(OerErrorKind::NonMinimalVarUint))
    );
    // A count with no bytes at all.
    assert_eq!(
        btp_err(&btp_envelope(6, &[0])),
        (6, B::Oer(OerErrorKind::EmptyVarUint))
    );
    assert_eq!(
        btp_err(&btp_envelope(6, &[1, 1, 0x80])),
        (8, B::Oer(OerErrorKind::IndefiniteLength))
    );
    assert_eq!(
        btp_err(&[6, 0, 0, 0, 1, 0x80]),
        (5, B::Oer(OerErrorKind::IndefiniteLength))
    );
    let mut long_envelope = vec![1, 0, 0, 0, 1, 0x81, 3];
    long_envelope.extend_from_slice(&[1, 0, 0]);
    assert_eq!(
        btp_err(&long_envelope),
        (5, B::Oer(OerErrorKind::NonMinimalLength))
    );
    // A count wider than 8 bytes.
    assert_eq!(
        btp_err(&btp_envelope(6, &[9, 1, 1, 1, 1, 1, 1, 1, 1, 1])),
        (6, B::Oer(OerErrorKind::VarUintTooLarge(9)))
    );
}

#[test]
fn btp_bad_ia5_and_utf8() {
    assert_eq!(
        btp_err(&btp_envelope(6, &[1, 1, 1, 0x80, 0, 0])),
        (
            8,
            B::NotIa5 {
                field: "protocolName"
            }
        )
    );
    // A text entry that is not UTF-8; a JSON one; an octet-stream one is fine.
    assert_eq!(
        btp_err(&btp_envelope(6, &[1, 1, 1, b'a', 1, 1, 0xff])),
        (
            11,
            B::InvalidUtf8 {
                field: "protocol data"
            }
        )
    );
    assert_eq!(
        btp_err(&btp_envelope(6, &[1, 1, 1, b'a', 2, 2, 0xc3, 0x28])),
        (
            11,
            B::InvalidUtf8 {
                field: "protocol data"
            }
        )
    );
    assert!(btp::Packet::parse(&btp_envelope(6, &[1, 1, 1, b'a', 0, 1, 0xff])).is_ok());
    // Error: code at 6, name at 9.
    let now = b"20180831025324.899Z";
    assert_eq!(
        btp_err(&raw_error(b"F\x800", b"x", now)),
        (6, B::InvalidErrorCode)
    );
    assert_eq!(
        btp_err(&raw_error(b"F00", "Fehlér".as_bytes(), now)),
        (9, B::NotIa5 { field: "name" })
    );
}

#[test]
fn btp_bad_timestamps() {
    // triggeredAt prefix at 9 + 1 + name length.
    for (text, error) in [
        (&b"20180831025324.899"[..], TimestampError::BadCharacter(17)),
        (b"2018083102532Z", TimestampError::WrongLength(14)),
        (b"20180831025324.8990Z", TimestampError::WrongLength(20)),
        (b"20180831025324,899Z", TimestampError::BadCharacter(14)),
        (
            b"20181331025324.899Z",
            TimestampError::FieldOutOfRange("month"),
        ),
        (b"", TimestampError::WrongLength(0)),
    ] {
        assert_eq!(
            btp_err(&raw_error(b"F00", b"E", text)),
            (11, B::InvalidTimestamp(error)),
            "{}",
            String::from_utf8_lossy(text)
        );
    }
    // interledger-rs fuzz_14: control characters where digits belong.
    let (offset, kind) = btp_err(BTP_RS_FUZZ_MUST_FAIL[13].1);
    assert_eq!(
        (offset, kind),
        (19, B::InvalidTimestamp(TimestampError::BadCharacter(1)))
    );
}

#[test]
fn btp_unknown_and_unexpected_types() {
    for t in [0u8, 3, 4, 5, 8, 12, 255] {
        assert_eq!(
            btp_err(&btp_envelope(t, &[1, 0])),
            (0, B::UnknownPacketType(t))
        );
    }
    let response = unhex(BTP_AUTH_RESPONSE);
    let err = btp::Message::parse(&response).unwrap_err();
    assert_eq!(
        (err.offset, err.kind),
        (
            0,
            B::UnexpectedPacketType {
                expected: btp::PacketType::Message,
                found: btp::PacketType::Response
            }
        )
    );
    assert_eq!(
        err.to_string(),
        "invalid BTP packet: expected a Message, found a Response at offset 0"
    );
    assert!(btp::Transfer::parse(&response).is_err());
    assert!(btp::ErrorPacket::parse(&response).is_err());
}

#[test]
fn btp_trailing_bytes() {
    let mut response = unhex(BTP_AUTH_RESPONSE);
    response.push(0);
    assert_eq!(btp_err(&response), (8, B::TrailingBytes { count: 1 }));
    // interledger-rs fuzz_5: garbage inside the envelope after the protocol data, and one
    // byte after the envelope; the outer one is found first.
    assert_eq!(
        btp_err(&[1, 1, 0, 1, 0, 6, 1, 0, 6, 1, 6, 1, 1]),
        (12, B::TrailingBytes { count: 1 })
    );
    assert_eq!(
        btp_err(&[1, 1, 0, 1, 0, 6, 1, 0, 6, 1, 6, 1]),
        (8, B::TrailingBytes { count: 4 })
    );
}

#[test]
fn btp_duplicate_protocol_names() {
    // Two empty-named entries: the second starts at 11.
    assert_eq!(
        btp_err(&btp_envelope(6, &[1, 2, 0, 0, 0, 0, 0, 0])),
        (11, B::DuplicateProtocolName)
    );
    // ilp, then auth, then ilp again.
    let mut contents = vec![1, 3];
    let mut offsets = Vec::new();
    for name in ["ilp", "auth", "ilp"] {
        offsets.push(6 + contents.len());
        write_var_octets(&mut contents, name.as_bytes());
        contents.push(0);
        write_var_octets(&mut contents, b"x");
    }
    assert_eq!(
        btp_err(&btp_envelope(6, &contents)),
        (offsets[2], B::DuplicateProtocolName)
    );
    // Past the small-table limit, the hash set takes over: 40 names, the last repeats p3.
    let names: Vec<String> = (0..39)
        .map(|i| format!("p{i}"))
        .chain(["p3".into()])
        .collect();
    let mut contents = vec![1, 40];
    let mut last = 0;
    for name in &names {
        // The contents pass 127 bytes, so the envelope's length takes 2 bytes: they start at 7.
        last = 7 + contents.len();
        write_var_octets(&mut contents, name.as_bytes());
        contents.push(0);
        write_var_octets(&mut contents, b"");
    }
    assert_eq!(
        btp_err(&btp_envelope(6, &contents)),
        (last, B::DuplicateProtocolName)
    );
    // The same 40 entries with distinct names parse.
    let entries: Vec<_> = (0..40).map(|i| format!("p{i}")).collect::<Vec<_>>();
    let entry_list: Vec<_> = entries
        .iter()
        .map(|n| ProtocolDataEntry::octets(n, b""))
        .collect();
    let bytes = btp::Message::new(1, ProtocolData::new(&entry_list).unwrap()).to_bytes();
    assert_eq!(
        btp::Message::parse(&bytes).unwrap().protocol_data().len(),
        40
    );
}

#[test]
fn btp_builders_refuse_what_parsers_would() {
    let dup = [
        ProtocolDataEntry::octets("ilp", b""),
        ProtocolDataEntry::text("auth_token", "t"),
        ProtocolDataEntry::octets("ilp", b"x"),
    ];
    assert_eq!(
        ProtocolData::new(&dup),
        Err(btp::BuildError::DuplicateProtocolName { index: 2 })
    );
    let many: Vec<String> = (0..20).map(|i| format!("n{}", i % 19)).collect();
    let many: Vec<_> = many
        .iter()
        .map(|n| ProtocolDataEntry::octets(n, b""))
        .collect();
    assert_eq!(
        ProtocolData::new(&many),
        Err(btp::BuildError::DuplicateProtocolName { index: 19 })
    );
    assert_eq!(
        ProtocolData::new(&[
            ProtocolDataEntry::octets("ok", b""),
            ProtocolDataEntry::octets("é", b"")
        ]),
        Err(btp::BuildError::ProtocolNameNotIa5 { index: 1 })
    );
    let bad_text = ProtocolDataEntry {
        name: "t",
        content_type: btp::ContentType::TextPlainUtf8,
        data: &[0xff],
    };
    assert_eq!(
        ProtocolData::new(&[bad_text]),
        Err(btp::BuildError::InvalidUtf8 { index: 0 })
    );
    let build = |name, data| {
        btp::ErrorPacketBuilder {
            request_id: 1,
            code: btp::ErrorCode::F00_NOT_ACCEPTED,
            name,
            triggered_at: Timestamp::MIN,
            data,
            protocol_data: ProtocolData::EMPTY,
        }
        .build()
    };
    assert_eq!(build("Fehlér", b""), Err(btp::BuildError::ErrorNameNotIa5));
    assert_eq!(
        build("E", &[0; 8193]),
        Err(btp::BuildError::TooLong {
            field: "data",
            len: 8193,
            max: 8192
        })
    );
    assert!(build("E", &[0; 8192]).is_ok());
}

#[test]
fn every_interledger_rs_fuzz_input_fails_with_an_offset_inside_it() {
    for (name, bytes) in BTP_RS_FUZZ_MUST_FAIL {
        let err = btp::Packet::parse(bytes).expect_err(name);
        assert!(err.offset <= bytes.len(), "{name}: {err}");
    }
}

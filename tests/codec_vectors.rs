//! Every test vector of the reference notes (shared/reference/interledger.md): ILP (§1.7),
//! IL-DCP (§4) and BTP (§3.5, §3.6), parsed field by field and re-serialized byte for byte.

use ilp_plugin_lightning::btp::{
    self, auth_message, AuthRequest, ContentType, ErrorPacket, ErrorPacketBuilder, Message,
    ProtocolData, ProtocolDataEntry, Response, Transfer,
};
use ilp_plugin_lightning::ilp::{self, Timestamp};

fn unhex(text: &str) -> Vec<u8> {
    let compact: String = text.split_whitespace().collect();
    hex::decode(compact).expect("test vector is hex")
}

// ---------------------------------------------------------------------------------------------
// BTP (§3.6): btp-packet 2.2.1 test/index.spec.ts

const JS_RESPONSE: &str =
    "010000000125010403696c70000003666f6f000362617204626565700104626f6f70046a736f6e02027b7d";
const JS_MESSAGE: &str =
    "060000000125010403696c70000003666f6f000362617204626565700104626f6f70046a736f6e02027b7d";
const JS_TRANSFER: &str = "07000000012d0000000000000064010403696c70000003666f6f000362617204626565700104626f6f70046a736f6e02027b7d";
const JS_ERROR: &str = "02000000014a4c3133096572726f724e616d651332303137303832383138333230302e3030305a03626f6f010403696c70000003666f6f000362617204626565700104626f6f70046a736f6e02027b7d";

fn js_entries() -> [ProtocolDataEntry<'static>; 4] {
    [
        ProtocolDataEntry::octets("ilp", b""),
        ProtocolDataEntry::octets("foo", b"bar"),
        ProtocolDataEntry::text("beep", "boop"),
        ProtocolDataEntry::json("json", "{}"),
    ]
}

fn assert_js_entries(protocol_data: ProtocolData<'_>) {
    let entries: Vec<_> = protocol_data.iter().collect();
    assert_eq!(entries, js_entries());
    assert_eq!(entries[2].content_type, ContentType::TextPlainUtf8);
    assert_eq!(entries[3].content_type, ContentType::ApplicationJson);
    assert_eq!(protocol_data.primary().map(|e| e.name), Some("ilp"));
    assert_eq!(protocol_data.ilp(), Some(&b""[..]));
    assert_eq!(protocol_data.get("beep").unwrap().data, b"boop");
    assert_eq!(protocol_data.get("nope"), None);
}

#[test]
fn btp_packet_js_response() {
    let bytes = unhex(JS_RESPONSE);
    assert_eq!(bytes.len(), 43);
    let response = Response::parse(&bytes).unwrap();
    assert_eq!(response.request_id(), 1);
    assert_js_entries(response.protocol_data());
    assert_eq!(response.to_bytes(), bytes);
    let entries = js_entries();
    let built = Response::new(1, ProtocolData::new(&entries).unwrap());
    assert_eq!(built, response);
    assert_eq!(built.to_bytes(), bytes);
    assert_eq!(built.encoded_len(), bytes.len());
}

#[test]
fn btp_packet_js_message() {
    let bytes = unhex(JS_MESSAGE);
    let message = Message::parse(&bytes).unwrap();
    assert_eq!(message.request_id(), 1);
    assert_js_entries(message.protocol_data());
    let entries = js_entries();
    let built = Message::new(1, ProtocolData::new(&entries).unwrap());
    assert_eq!(built.to_bytes(), bytes);
    match btp::Packet::parse(&bytes).unwrap() {
        btp::Packet::Message(m) => assert_eq!(m, message),
        other => panic!("not a Message: {other:?}"),
    }
}

#[test]
fn btp_packet_js_transfer() {
    let bytes = unhex(JS_TRANSFER);
    assert_eq!(bytes.len(), 51);
    let transfer = Transfer::parse(&bytes).unwrap();
    assert_eq!(transfer.request_id(), 1);
    assert_eq!(transfer.amount(), 100);
    assert_js_entries(transfer.protocol_data());
    let entries = js_entries();
    let built = Transfer::new(1, 100, ProtocolData::new(&entries).unwrap());
    assert_eq!(built.to_bytes(), bytes);
}

#[test]
fn btp_packet_js_error() {
    let bytes = unhex(JS_ERROR);
    assert_eq!(bytes.len(), 80);
    let error = ErrorPacket::parse(&bytes).unwrap();
    assert_eq!(error.request_id(), 1);
    assert_eq!(error.code().as_str(), "L13");
    assert_eq!(error.name(), "errorName");
    assert_eq!(
        error.triggered_at().to_iso8601(),
        "2017-08-28T18:32:00.000Z"
    );
    assert_eq!(error.data(), b"boo");
    assert_js_entries(error.protocol_data());
    let entries = js_entries();
    let built = ErrorPacketBuilder {
        request_id: 1,
        code: btp::ErrorCode::new(*b"L13").unwrap(),
        name: "errorName",
        triggered_at: Timestamp::parse_generalized(b"20170828183200.000Z").unwrap(),
        data: b"boo",
        protocol_data: ProtocolData::new(&entries).unwrap(),
    }
    .build()
    .unwrap();
    assert_eq!(built, error);
    assert_eq!(built.to_bytes(), bytes);
}

// BTP (§3.6): interledger-rs crates/interledger-btp/src/packet.rs

#[test]
fn interledger_rs_message() {
    let bytes = unhex("060000000217010204746573740002ffff0474657874010568656c6c6f");
    let message = Message::parse(&bytes).unwrap();
    assert_eq!(message.request_id(), 2);
    let entries = [
        ProtocolDataEntry::octets("test", &[0xff, 0xff]),
        ProtocolDataEntry::text("text", "hello"),
    ];
    assert_eq!(message.protocol_data().iter().collect::<Vec<_>>(), entries);
    assert_eq!(
        Message::new(2, ProtocolData::new(&entries).unwrap()).to_bytes(),
        bytes
    );
}

#[test]
fn interledger_rs_response() {
    let bytes = unhex("01000000811b010113736f6d65206f746865722070726f746f636f6c0003aaaaaa");
    let response = Response::parse(&bytes).unwrap();
    assert_eq!(response.request_id(), 129);
    let entries = [ProtocolDataEntry::octets(
        "some other protocol",
        &[0xaa, 0xaa, 0xaa],
    )];
    assert_eq!(response.protocol_data().iter().collect::<Vec<_>>(), entries);
    assert_eq!(
        Response::new(129, ProtocolData::new(&entries).unwrap()).to_bytes(),
        bytes
    );
}

#[test]
fn interledger_rs_error() {
    let bytes = unhex("02000001f52f54303010556e726561636861626c654572726f721332303138303833313032353332342e3839395a046f6f70730100");
    let error = ErrorPacket::parse(&bytes).unwrap();
    assert_eq!(error.request_id(), 501);
    assert_eq!(error.code(), btp::ErrorCode::T00_UNREACHABLE);
    assert_eq!(error.code().name(), Some("UnreachableError"));
    assert_eq!(error.name(), "UnreachableError");
    assert_eq!(
        error.triggered_at().to_iso8601(),
        "2018-08-31T02:53:24.899Z"
    );
    assert_eq!(error.data(), b"oops");
    assert!(error.protocol_data().is_empty());
    assert_eq!(error.to_bytes(), bytes);
}

/// interledger-rs fuzz regressions that must round-trip (`fuzz_11`, and `fuzz_14_1`'s protocol
/// data wrapped in a Message): an empty protocol name, unknown content types, control
/// characters in names (IA5 allows them).
#[test]
fn interledger_rs_fuzz_inputs_that_round_trip() {
    let fuzz_11 = [6, 0, 0, 1, 1, 6, 1, 1, 0, 253, 1, 0];
    let message = Message::parse(&fuzz_11).unwrap();
    let entry = message.protocol_data().primary().unwrap();
    assert_eq!(entry.name, "");
    assert_eq!(entry.content_type, ContentType::Unknown(253));
    assert_eq!(entry.data, [0]);
    assert_eq!(message.to_bytes(), fuzz_11);
    let rebuilt: Vec<_> = message.protocol_data().iter().collect();
    assert_eq!(
        Message::new(0x101, ProtocolData::new(&rebuilt).unwrap()).to_bytes(),
        fuzz_11
    );

    let fuzz_14_1_protocol_data: &[u8] = &[
        1, 3, 1, 1, 0, 0, 1, 0, 6, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 79, 9, 9, 9, 9, 9,
        9, 9, 9, 9, 9, 9, 9, 9, 9, 51,
    ];
    let mut wrapped = vec![6, 0, 0, 0, 9, fuzz_14_1_protocol_data.len() as u8];
    wrapped.extend_from_slice(fuzz_14_1_protocol_data);
    let message = Message::parse(&wrapped).unwrap();
    assert_eq!(message.protocol_data().len(), 3);
    assert_eq!(message.to_bytes(), wrapped);
    let rebuilt: Vec<_> = message.protocol_data().iter().collect();
    assert_eq!(
        Message::new(9, ProtocolData::new(&rebuilt).unwrap()).to_bytes(),
        wrapped
    );
}

// BTP (§3.5): the auth handshake

#[test]
fn auth_message_and_response() {
    let bytes = unhex("0600000001310103046175746800000d617574685f757365726e616d650105616c6963650a617574685f746f6b656e0106736563726574");
    assert_eq!(auth_message(1, "alice", "secret"), bytes);
    let message = Message::parse(&bytes).unwrap();
    let names: Vec<_> = message.protocol_data().iter().map(|e| e.name).collect();
    assert_eq!(names, ["auth", "auth_username", "auth_token"]);
    let auth = AuthRequest::from_message(&message).unwrap();
    assert_eq!(auth.username, Some("alice"));
    assert_eq!(auth.token, "secret");

    let response = unhex("0100000001020100");
    assert_eq!(Response::new(1, ProtocolData::EMPTY).to_bytes(), response);
    let parsed = Response::parse(&response).unwrap();
    assert_eq!(parsed.request_id(), 1);
    assert!(parsed.protocol_data().is_empty());
}

#[test]
fn auth_request_needs_auth_first_and_a_token() {
    let no_token = [ProtocolDataEntry::octets("auth", b"")];
    let message = Message::new(1, ProtocolData::new(&no_token).unwrap());
    assert_eq!(
        AuthRequest::from_message(&message),
        Err(btp::AuthError::MissingToken)
    );
    let wrong_primary = [
        ProtocolDataEntry::text("auth_token", "x"),
        ProtocolDataEntry::octets("auth", b""),
    ];
    let message = Message::new(1, ProtocolData::new(&wrong_primary).unwrap());
    assert_eq!(
        AuthRequest::from_message(&message),
        Err(btp::AuthError::NotAuth)
    );
    let empty_token_no_user = [
        ProtocolDataEntry::octets("auth", b""),
        ProtocolDataEntry::octets("auth_token", b""),
    ];
    let message = Message::new(1, ProtocolData::new(&empty_token_no_user).unwrap());
    assert_eq!(
        AuthRequest::from_message(&message),
        Ok(AuthRequest {
            username: None,
            token: ""
        })
    );
    let binary_token = [
        ProtocolDataEntry::octets("auth", b""),
        ProtocolDataEntry::octets("auth_token", &[0xff]),
    ];
    let message = Message::new(1, ProtocolData::new(&binary_token).unwrap());
    assert_eq!(
        AuthRequest::from_message(&message),
        Err(btp::AuthError::NotText { name: "auth_token" })
    );
}

// BTP (§3.6, derived): ILP packets carried in BTP

#[test]
fn prepare_in_message_and_fulfill_in_response() {
    let prepare = unhex(ILP_PREPARE);
    let fulfill = unhex(ILP_FULFILL);
    let mut message_bytes = unhex("060000007b72010103696c70006a");
    message_bytes.extend_from_slice(&prepare);
    let message = Message::parse(&message_bytes).unwrap();
    assert_eq!(message.request_id(), 123);
    let ilp_bytes = message.protocol_data().ilp().unwrap();
    assert_eq!(ilp_bytes, prepare);
    let ilp::Packet::Prepare(parsed) = ilp::Packet::parse(ilp_bytes).unwrap() else {
        panic!("not a Prepare")
    };
    assert_eq!(parsed.amount(), 107);
    let entries = [ProtocolDataEntry::octets("ilp", &prepare)];
    assert_eq!(
        Message::new(123, ProtocolData::new(&entries).unwrap()).to_bytes(),
        message_bytes
    );

    let mut response_bytes = unhex("010000007b4b010103696c700043");
    response_bytes.extend_from_slice(&fulfill);
    let response = Response::parse(&response_bytes).unwrap();
    assert_eq!(response.request_id(), 123);
    assert_eq!(response.protocol_data().ilp(), Some(&fulfill[..]));
    let entries = [ProtocolDataEntry::octets("ilp", &fulfill)];
    assert_eq!(
        Response::new(123, ProtocolData::new(&entries).unwrap()).to_bytes(),
        response_bytes
    );
}

#[test]
fn btp_error_code_table() {
    let expected = [
        ("T00", "UnreachableError"),
        ("F00", "NotAcceptedError"),
        ("F01", "InvalidFieldsError"),
        ("F03", "TransferNotFoundError"),
        ("F04", "InvalidFulfillmentError"),
        ("F05", "DuplicateIdError"),
        ("F06", "AlreadyRolledBackError"),
        ("F07", "AlreadyFulfilledError"),
        ("F08", "InsufficientBalanceError"),
    ];
    let table: Vec<_> = btp::ErrorCode::TABLE
        .iter()
        .map(|(code, name)| (code.as_str(), *name))
        .collect();
    assert_eq!(table, expected);
}

#[test]
fn btp_timestamps_written_long_read_in_every_form() {
    for (text, iso) in [
        ("20180831025324.899Z", "2018-08-31T02:53:24.899Z"),
        ("20180831025324.89Z", "2018-08-31T02:53:24.890Z"),
        ("20180831025324.8Z", "2018-08-31T02:53:24.800Z"),
        ("20180831025324Z", "2018-08-31T02:53:24.000Z"),
    ] {
        let mut bytes = vec![2, 0, 0, 0, 1, 0, b'F', b'0', b'0', 0, text.len() as u8];
        bytes.extend_from_slice(text.as_bytes());
        bytes.extend_from_slice(&[0, 1, 0]);
        bytes[5] = (bytes.len() - 6) as u8;
        let error = ErrorPacket::parse(&bytes).unwrap();
        assert_eq!(error.triggered_at().to_iso8601(), iso, "{text}");
        let written = error.to_bytes();
        let at = 11;
        assert_eq!(written[at - 1], 19, "{text}");
        assert_eq!(written.len(), 6 + 3 + 1 + 1 + 19 + 1 + 2);
        assert_eq!(
            ErrorPacket::parse(&written).unwrap().triggered_at(),
            error.triggered_at()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// ILP (§1.7): ilp-packet test/data/*/valid/example01.json

const ILP_PREPARE: &str = "0c68000000000000006b323031373132323330313231343035343974e1136dc71c9e5f283bec83461cbf1261c4014f72d48f8dd65453a0b84e7de10d6578616d706c652e616c696365205db343fdc41898f6df4202329139dc242dd0f558a811b46b28918fdab37c6cb0";
const ILP_FULFILL: &str = "0d41c3866b48749ccf113b2e15c25d2407fbfc14476fe7296bb1bf1bcd9e6e41665020673febd78a33b28e1c0db14c9a06251a05fa831ed4ed91ebcd150e7249c2e600";

//! Every test vector of the reference notes (shared/reference/interledger.md): ILP (§1.7),
//! IL-DCP (§4) and BTP (§3.5, §3.6), parsed field by field and re-serialized byte for byte.

use ilp_plugin_lightning::btp::{
    self, auth_message, AuthRequest, ContentType, ErrorPacket, ErrorPacketBuilder, Message,
    ProtocolData, ProtocolDataEntry, Response, Transfer,
};
use ilp_plugin_lightning::ilp::{self, Timestamp};

mod vectors;
use vectors::*;

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
    let bytes = unhex(BTP_JS_RESPONSE);
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
    let bytes = unhex(BTP_JS_MESSAGE);
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
    let bytes = unhex(BTP_JS_TRANSFER);
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
    let bytes = unhex(BTP_JS_ERROR);
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
    let bytes = unhex(BTP_RS_MESSAGE);
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
    let bytes = unhex(BTP_RS_RESPONSE);
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
    let bytes = unhex(BTP_RS_ERROR);
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
    let bytes = unhex(BTP_AUTH);
    assert_eq!(auth_message(1, "alice", "secret"), bytes);
    let message = Message::parse(&bytes).unwrap();
    let names: Vec<_> = message.protocol_data().iter().map(|e| e.name).collect();
    assert_eq!(names, ["auth", "auth_username", "auth_token"]);
    let auth = AuthRequest::from_message(&message).unwrap();
    assert_eq!(auth.username, Some("alice"));
    assert_eq!(auth.token, "secret");

    let response = unhex(BTP_AUTH_RESPONSE);
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

    assert_eq!(btp::ilp_message(123, &prepare), message_bytes);

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
    assert_eq!(btp::ilp_response(123, &fulfill), response_bytes);
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

#[test]
fn interledger_rs_fuzz_inputs_that_must_fail() {
    for (name, bytes) in BTP_RS_FUZZ_MUST_FAIL {
        let err = btp::Packet::parse(bytes).expect_err(name);
        // The message names the layer and the offset.
        let text = err.to_string();
        assert!(text.starts_with("invalid BTP packet: "), "{name}: {text}");
        assert!(
            text.ends_with(&format!("at offset {}", err.offset)),
            "{name}: {text}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// ILP (§1.7): ilp-packet test/data/*/valid/example01.json

#[test]
fn ilp_packet_js_prepare() {
    let bytes = unhex(ILP_PREPARE);
    // 2 bytes of envelope + 0x68 of contents (the notes' "108 B" heading is off by two; their
    // BTP vector carries it as "<106-byte prepare>").
    assert_eq!(bytes.len(), 106);
    let prepare = ilp::Prepare::parse(&bytes).unwrap();
    assert_eq!(prepare.amount(), 107);
    assert_eq!(
        prepare.expires_at().to_iso8601(),
        "2017-12-23T01:21:40.549Z"
    );
    assert_eq!(
        prepare.execution_condition()[..],
        unhex(ILP_PREPARE_CONDITION)
    );
    assert_eq!(prepare.destination(), "example.alice");
    assert_eq!(prepare.data(), unhex(ILP_PREPARE_DATA));
    assert_eq!(prepare.to_bytes(), bytes);
    let condition: [u8; 32] = unhex(ILP_PREPARE_CONDITION).try_into().unwrap();
    let data = unhex(ILP_PREPARE_DATA);
    let built = ilp::PrepareBuilder {
        amount: 107,
        expires_at: Timestamp::parse_ilp(b"20171223012140549").unwrap(),
        execution_condition: &condition,
        destination: "example.alice",
        data: &data,
    }
    .build()
    .unwrap();
    assert_eq!(built, prepare);
    assert_eq!(built.to_bytes(), bytes);
    assert_eq!(built.encoded_len(), bytes.len());
    assert_eq!(
        ilp::Packet::parse(&bytes).unwrap(),
        ilp::Packet::Prepare(prepare)
    );
}

#[test]
fn ilp_packet_js_fulfill() {
    let bytes = unhex(ILP_FULFILL);
    assert_eq!(bytes.len(), 67);
    let fulfill = ilp::Fulfill::parse(&bytes).unwrap();
    assert_eq!(fulfill.fulfillment()[..], unhex(ILP_FULFILLMENT));
    assert_eq!(fulfill.data(), unhex(ILP_FULFILL_DATA));
    // The vectors are independent: this fulfillment is not the Prepare's preimage.
    let condition: [u8; 32] = unhex(ILP_PREPARE_CONDITION).try_into().unwrap();
    assert!(!fulfill.fulfills(&condition));
    assert!(fulfill.fulfills(&ilp::condition_of(fulfill.fulfillment())));
    let fulfillment: [u8; 32] = unhex(ILP_FULFILLMENT).try_into().unwrap();
    let data = unhex(ILP_FULFILL_DATA);
    let built = ilp::FulfillBuilder {
        fulfillment: &fulfillment,
        data: &data,
    }
    .build()
    .unwrap();
    assert_eq!(built.to_bytes(), bytes);
}

#[test]
fn ilp_packet_js_reject() {
    let bytes = unhex(ILP_REJECT);
    assert_eq!(bytes.len(), 67);
    let reject = ilp::Reject::parse(&bytes).unwrap();
    assert_eq!(reject.code(), ilp::ErrorCode::F01_INVALID_PACKET);
    assert_eq!(reject.triggered_by(), "example.us.bob");
    assert_eq!(reject.message(), "missing destination. ledger=example.us.");
    assert_eq!(reject.data(), [0, 0, 0, 4, 0x10, 0x41]);
    let built = ilp::RejectBuilder {
        code: ilp::ErrorCode::F01_INVALID_PACKET,
        triggered_by: "example.us.bob",
        message: "missing destination. ledger=example.us.",
        data: &[0, 0, 0, 4, 0x10, 0x41],
    }
    .build()
    .unwrap();
    assert_eq!(built.to_bytes(), bytes);
}

#[test]
fn interledger_rs_reject_with_empty_triggered_by() {
    let bytes = unhex(ILP_REJECT_EMPTY_TRIGGERED_BY);
    let reject = ilp::Reject::parse(&bytes).unwrap();
    assert_eq!(reject.code(), ilp::ErrorCode::F02_UNREACHABLE);
    assert_eq!(reject.triggered_by(), "");
    assert_eq!(reject.message(), "x");
    assert_eq!(reject.data(), b"");
    let built = ilp::RejectBuilder {
        code: ilp::ErrorCode::F02_UNREACHABLE,
        triggered_by: "",
        message: "x",
        data: b"",
    }
    .build()
    .unwrap();
    assert_eq!(built.to_bytes(), bytes);
}

/// interledger-rs fixtures: long-form (`82 01 xx`) envelope and data lengths.
#[test]
fn interledger_rs_long_form_packets() {
    let condition: [u8; 32] = unhex(RS_CONDITION).try_into().unwrap();
    let data = unhex(RS_DATA);
    assert_eq!(data.len(), 257);

    let bytes = rs_prepare();
    assert_eq!(bytes.len(), 335);
    assert_eq!(bytes[..4], [0x0c, 0x82, 0x01, 0x4b]);
    let prepare = ilp::Prepare::parse(&bytes).unwrap();
    assert_eq!(prepare.amount(), 107);
    assert_eq!(
        prepare.expires_at().to_iso8601(),
        "2018-06-07T20:48:42.483Z"
    );
    assert_eq!(prepare.destination(), "example.alice");
    assert_eq!(prepare.data(), data);
    let built = ilp::PrepareBuilder {
        amount: 107,
        expires_at: Timestamp::parse_ilp(RS_EXPIRES_AT.as_bytes()).unwrap(),
        execution_condition: &condition,
        destination: "example.alice",
        data: &data,
    }
    .build()
    .unwrap();
    assert_eq!(built.to_bytes(), bytes);

    let bytes = rs_fulfill();
    assert_eq!(bytes.len(), 296);
    assert_eq!(bytes[..4], [0x0d, 0x82, 0x01, 0x24]);
    let fulfill = ilp::Fulfill::parse(&bytes).unwrap();
    assert_eq!(fulfill.fulfillment(), &condition);
    assert_eq!(fulfill.data(), data);
    let built = ilp::FulfillBuilder {
        fulfillment: &condition,
        data: &data,
    }
    .build()
    .unwrap();
    assert_eq!(built.to_bytes(), bytes);

    let bytes = rs_reject();
    assert_eq!(bytes.len(), 296);
    let reject = ilp::Reject::parse(&bytes).unwrap();
    assert_eq!(reject.code(), ilp::ErrorCode::F99_APPLICATION_ERROR);
    assert_eq!(reject.triggered_by(), "example.connector");
    assert_eq!(reject.message(), "Some error");
    assert_eq!(reject.data(), data);
    let built = ilp::RejectBuilder {
        code: ilp::ErrorCode::F99_APPLICATION_ERROR,
        triggered_by: "example.connector",
        message: "Some error",
        data: &data,
    }
    .build()
    .unwrap();
    assert_eq!(built.to_bytes(), bytes);
}

// ---------------------------------------------------------------------------------------------
// IL-DCP (§4): ilp-protocol-ildcp test/index.test.ts

#[test]
fn ildcp_request() {
    let bytes = unhex(ILDCP_REQUEST);
    let prepare = ilp::Prepare::parse(&bytes).unwrap();
    assert!(ilp::ildcp::is_request(&prepare));
    assert_eq!(prepare.amount(), 0);
    assert_eq!(prepare.destination(), "peer.config");
    assert_eq!(
        prepare.expires_at().to_iso8601(),
        "2015-06-16T00:01:00.000Z"
    );
    assert_eq!(
        ilp::ildcp::request(Timestamp::parse_ilp(b"20150616000100000").unwrap()),
        bytes
    );
    // The condition is SHA-256 of the 32 zero bytes a Fulfill answers with.
    assert_eq!(
        ilp::condition_of(&ilp::ildcp::PEER_PROTOCOL_FULFILLMENT),
        ilp::ildcp::PEER_PROTOCOL_CONDITION
    );
}

#[test]
fn ildcp_response() {
    let bytes = unhex(ILDCP_RESPONSE);
    let response = ilp::ildcp::IldcpResponse::from_reply(&bytes).unwrap();
    assert_eq!(response.client_address.as_str(), "example.client");
    assert_eq!(response.asset_scale, 13);
    assert_eq!(response.asset_code, "XAM");
    assert_eq!(response.to_fulfill_bytes(), bytes);
}

#[test]
fn ildcp_rejects_from_serve() {
    for (hex_text, message) in [
        (
            ILDCP_REJECT_THREW,
            "something bad occurred in the neighborhood.",
        ),
        (ILDCP_REJECT_UNEXPECTED, "unexpected error."),
    ] {
        let bytes = unhex(hex_text);
        let reject = ilp::Reject::parse(&bytes).unwrap();
        assert_eq!(reject.code(), ilp::ErrorCode::F00_BAD_REQUEST);
        assert_eq!(reject.triggered_by(), "example.server");
        assert_eq!(reject.message(), message);
        assert_eq!(reject.to_bytes(), bytes);
        assert_eq!(
            ilp::ildcp::IldcpResponse::from_reply(&bytes),
            Err(ilp::ildcp::IldcpError::Rejected {
                code: "F00".into(),
                message: message.into()
            })
        );
    }
}

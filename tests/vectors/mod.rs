//! The reference test vectors (shared/reference/interledger.md), as hex, shared by the codec
//! tests, the decode CLI tests and the benchmark.
#![allow(dead_code)]

/// Hex text to bytes; whitespace is ignored.
pub fn unhex(text: &str) -> Vec<u8> {
    let compact: String = text.split_whitespace().collect();
    hex::decode(compact).expect("test vector is hex")
}

// ILP §1.7: ilp-packet test/data/*/valid/example01.json
pub const ILP_PREPARE: &str = "0c68000000000000006b323031373132323330313231343035343974e1136dc71c9e5f283bec83461cbf1261c4014f72d48f8dd65453a0b84e7de10d6578616d706c652e616c696365205db343fdc41898f6df4202329139dc242dd0f558a811b46b28918fdab37c6cb0";
pub const ILP_PREPARE_CONDITION: &str =
    "74e1136dc71c9e5f283bec83461cbf1261c4014f72d48f8dd65453a0b84e7de1";
pub const ILP_PREPARE_DATA: &str =
    "5db343fdc41898f6df4202329139dc242dd0f558a811b46b28918fdab37c6cb0";
pub const ILP_FULFILL: &str = "0d41c3866b48749ccf113b2e15c25d2407fbfc14476fe7296bb1bf1bcd9e6e41665020673febd78a33b28e1c0db14c9a06251a05fa831ed4ed91ebcd150e7249c2e600";
pub const ILP_FULFILLMENT: &str =
    "c3866b48749ccf113b2e15c25d2407fbfc14476fe7296bb1bf1bcd9e6e416650";
pub const ILP_FULFILL_DATA: &str =
    "673febd78a33b28e1c0db14c9a06251a05fa831ed4ed91ebcd150e7249c2e600";
pub const ILP_REJECT: &str = "0e414630310e6578616d706c652e75732e626f62276d697373696e672064657374696e6174696f6e2e206c65646765723d6578616d706c652e75732e06000000041041";
/// interledger-rs `RejectBuilder { triggered_by: None }`: an empty triggeredBy.
pub const ILP_REJECT_EMPTY_TRIGGERED_BY: &str = "0e07463032000178 00";

// ILP §1.7, long form: interledger-rs crates/interledger-packet/src/fixtures.rs. The packets are
// rebuilt from their fields (amount 107, the condition, example.alice, 257 bytes of data).
pub const RS_EXPIRES_AT: &str = "20180607204842483";
pub const RS_CONDITION: &str = "117b434f1a54e9044f4f54923b2cff9e4a6d420ae281d5025d7bb040c4b4c04a";
pub const RS_DATA: &str = "6c99f6a969473028ef46e09b471581c915b6d5496329c1e3a1c2748d7422a7bdcc798e286cabe3197cccfc213e930b8dba57c7abdf2d1f3b2511689de4f0eff441f53da0feffd23249a355b26c3bd0256d5122e7ccdf159fd6cb083dd73cb29397967871becd04890492119c5e3e6b024be35de26466f60c16d90a21054fb13800120cfb85b0df76e50aacd68526fd043026d3d02010c671987a1f6501b5085f0d7d5897624be5862f98c01df65792970181a87d0f3c586a0ca6bd89dc372c45eef5b38a6307b16f1d7d31e8d92e5982c9dd2986eaad581f212d43da9c5cb7b948fc18914be90219709d0c26d3b5f4ad879d8494bb3aebfe612ec54041e4a380f0";

/// The 335-byte interledger-rs Prepare: `0c 82 01 4b` + amount + expiry + condition +
/// `0d example.alice` + `82 01 01` + data.
pub fn rs_prepare() -> Vec<u8> {
    unhex(&format!(
        "0c82014b 000000000000006b {} {} 0d6578616d706c652e616c696365 820101 {}",
        hex::encode(RS_EXPIRES_AT),
        RS_CONDITION,
        RS_DATA
    ))
}

/// The 296-byte interledger-rs Fulfill (its fulfillment is the same 32 bytes as the condition).
pub fn rs_fulfill() -> Vec<u8> {
    unhex(&format!("0d820124 {RS_CONDITION} 820101 {RS_DATA}"))
}

/// The 296-byte interledger-rs Reject: F99, example.connector, "Some error".
pub fn rs_reject() -> Vec<u8> {
    unhex(&format!(
        "0e820124 463939 116578616d706c652e636f6e6e6563746f72 0a536f6d65206572726f72 820101 {RS_DATA}"
    ))
}

// IL-DCP §4: ilp-protocol-ildcp test/index.test.ts
pub const ILDCP_REQUEST: &str = "0c460000000000000000323031353036313630303031303030303066687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f29250b706565722e636f6e66696700";
pub const ILDCP_RESPONSE: &str = "0d350000000000000000000000000000000000000000000000000000000000000000140e6578616d706c652e636c69656e740d0358414d";
pub const ILDCP_REJECT_THREW: &str = "0e3f4630300e6578616d706c652e7365727665722b736f6d657468696e6720626164206f6363757272656420696e20746865206e65696768626f72686f6f642e00";
pub const ILDCP_REJECT_UNEXPECTED: &str =
    "0e254630300e6578616d706c652e73657276657211756e6578706563746564206572726f722e00";

// BTP §3.6: btp-packet 2.2.1 test/index.spec.ts. protocolData = [ilp/0/empty, foo/0/"bar",
// beep/1/"boop", json/2/"{}"], requestId 1.
pub const BTP_JS_RESPONSE: &str =
    "010000000125010403696c70000003666f6f000362617204626565700104626f6f70046a736f6e02027b7d";
pub const BTP_JS_MESSAGE: &str =
    "060000000125010403696c70000003666f6f000362617204626565700104626f6f70046a736f6e02027b7d";
pub const BTP_JS_TRANSFER: &str = "07000000012d0000000000000064010403696c70000003666f6f000362617204626565700104626f6f70046a736f6e02027b7d";
pub const BTP_JS_ERROR: &str = "02000000014a4c3133096572726f724e616d651332303137303832383138333230302e3030305a03626f6f010403696c70000003666f6f000362617204626565700104626f6f70046a736f6e02027b7d";

// BTP §3.6: interledger-rs crates/interledger-btp/src/packet.rs
pub const BTP_RS_MESSAGE: &str = "060000000217010204746573740002ffff0474657874010568656c6c6f";
pub const BTP_RS_RESPONSE: &str =
    "01000000811b010113736f6d65206f746865722070726f746f636f6c0003aaaaaa";
pub const BTP_RS_ERROR: &str = "02000001f52f54303010556e726561636861626c654572726f721332303138303833313032353332342e3839395a046f6f70730100";

// BTP §3.5 (derived): the auth handshake, user alice, token secret, requestId 1.
pub const BTP_AUTH: &str = "0600000001310103046175746800000d617574685f757365726e616d650105616c6963650a617574685f746f6b656e0106736563726574";
pub const BTP_AUTH_RESPONSE: &str = "0100000001020100";

/// BTP §3.6 (derived): the §1.7 Prepare in a Message, requestId 123.
pub fn btp_prepare_message() -> Vec<u8> {
    unhex(&format!("060000007b72010103696c70006a{ILP_PREPARE}"))
}

/// BTP §3.6 (derived): the §1.7 Fulfill in a Response, requestId 123.
pub fn btp_fulfill_response() -> Vec<u8> {
    unhex(&format!("010000007b4b010103696c700043{ILP_FULFILL}"))
}

/// interledger-rs BTP fuzz regressions (crates/interledger-btp/src/packet.rs, `fuzzed`) that
/// must fail to parse, by name. `fuzz_13` (a var-uint with a leading zero) is included: only
/// interledger-rs's non-strict mode accepts it, and canonical OER does not.
pub const BTP_RS_FUZZ_MUST_FAIL: &[(&str, &[u8])] = &[
    ("fuzz_0_empty_input", &[]),
    ("fuzz_1_too_large_uint", &[6, 0, 0, 1, 0, 1, 45]),
    ("fuzz_2_too_short_var_octets", &[1, 1, 0, 0, 4, 4, 0]),
    ("fuzz_3_too_short_var_octets", &[1, 1, 65, 0, 0, 9, 1, 0]),
    ("fuzz_4_trailing_bytes", &[1, 0, 0, 2, 0, 2, 0, 0, 250, 134]),
    (
        "fuzz_5_trailing_bytes_inside_protocol_data",
        &[1, 1, 0, 1, 0, 6, 1, 0, 6, 1, 6, 1, 1],
    ),
    ("fuzz_6_too_short_var_octets", &[1, 1, 2, 217, 19, 50, 212]),
    (
        "fuzz_7_too_short_var_octets",
        &[2, 0, 0, 30, 30, 134, 30, 8, 36, 128, 96, 50],
    ),
    (
        "fuzz_8_large_allocation",
        &[1, 1, 0, 6, 1, 132, 132, 0, 91, 255, 50],
    ),
    ("fuzz_9_short_var_octet_string", &[6, 0, 0, 1, 1, 6, 1, 0]),
    (
        "fuzz_10_garbage_protocol_data",
        &[6, 0, 0, 1, 1, 6, 1, 0, 253, 1, 1, 1],
    ),
    (
        "fuzz_12_waste_in_length_of_length",
        &[6, 0, 0, 1, 1, 7, 129, 1, 1, 1, 6, 1, 0],
    ),
    (
        "fuzz_13_wasteful_var_uint",
        &[6, 0, 0, 0, 0, 6, 2, 0, 1, 0, 1, 0],
    ),
    (
        "fuzz_14_invalid_timestamp",
        &[
            2, 0, 127, 1, 12, 73, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 18, 52, 9, 51, 9, 12, 9,
            9, 51, 9, 12, 9, 53, 9, 51, 9, 54, 48, 90, 0, 1, 3, 1, 1, 0, 0, 1, 0, 6, 9, 9, 9, 9, 9,
            9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 79, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 51,
        ],
    ),
];

/// interledger-rs `fuzz_11`: must parse and re-serialize unchanged (empty name, content type 253).
pub const BTP_RS_FUZZ_11: &[u8] = &[6, 0, 0, 1, 1, 6, 1, 1, 0, 253, 1, 0];
/// interledger-rs `fuzz_14_1`: protocol data alone, which must round-trip.
pub const BTP_RS_FUZZ_14_1_PROTOCOL_DATA: &[u8] = &[
    1, 3, 1, 1, 0, 0, 1, 0, 6, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 79, 9, 9, 9, 9, 9, 9,
    9, 9, 9, 9, 9, 9, 9, 9, 51,
];

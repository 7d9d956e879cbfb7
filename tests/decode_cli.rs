//! `ilp-lightning decode` run as a program on every reference vector and on bad input.

use std::io::Write;
use std::process::{Command, Stdio};

mod vectors;
use vectors::*;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn decode(args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ilp-lightning"))
        .arg("decode")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ilp-lightning runs");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code().expect("exited normally"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// Decodes `hex_text` given as an argument; checks success, one line of output, one object.
fn decoded(hex_text: &str) -> String {
    let run = decode(&[hex_text], None);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert!(run.stderr.is_empty(), "stderr: {}", run.stderr);
    let json = run.stdout.strip_suffix('\n').expect("ends with a newline");
    assert!(!json.contains('\n'));
    assert!(json.starts_with('{') && json.ends_with('}'), "{json}");
    json.to_owned()
}

fn assert_has(json: &str, fields: &[&str]) {
    for field in fields {
        assert!(json.contains(field), "missing {field} in {json}");
    }
}

/// Runs on bad input: exit status 2, nothing on stdout, one line on stderr that starts so.
fn refused(args: &[&str], stdin: Option<&str>, expected_start: &str) -> String {
    let run = decode(args, stdin);
    assert_eq!(run.code, 2, "stdout: {} stderr: {}", run.stdout, run.stderr);
    assert!(run.stdout.is_empty(), "stdout: {}", run.stdout);
    let line = run.stderr.strip_suffix('\n').expect("ends with a newline");
    assert!(!line.contains('\n'), "more than one line: {line}");
    assert!(line.starts_with(expected_start), "{line}");
    line.to_owned()
}

#[test]
fn ilp_prepare() {
    let json = decoded(ILP_PREPARE);
    assert_eq!(
        json,
        format!(
            r#"{{"layer":"ilp","type":"prepare","typeId":12,"amount":107,"expiresAt":"2017-12-23T01:21:40.549Z","executionCondition":"{ILP_PREPARE_CONDITION}","destination":"example.alice","data":"{ILP_PREPARE_DATA}"}}"#
        )
    );
}

#[test]
fn ilp_fulfill_and_reject() {
    let json = decoded(ILP_FULFILL);
    assert_has(
        &json,
        &[
            r#""type":"fulfill""#,
            &format!(r#""fulfillment":"{ILP_FULFILLMENT}""#),
            &format!(r#""data":"{ILP_FULFILL_DATA}""#),
        ],
    );
    assert!(!json.contains("ildcp"), "{json}");

    let json = decoded(ILP_REJECT);
    assert_has(
        &json,
        &[
            r#""type":"reject""#,
            r#""code":"F01""#,
            r#""codeName":"Invalid Packet""#,
            r#""triggeredBy":"example.us.bob""#,
            r#""message":"missing destination. ledger=example.us.""#,
            r#""data":"000000041041""#,
        ],
    );

    let json = decoded(ILP_REJECT_EMPTY_TRIGGERED_BY);
    assert_has(
        &json,
        &[r#""code":"F02""#, r#""triggeredBy":"""#, r#""message":"x""#],
    );
}

#[test]
fn ilp_long_form_packets() {
    let json = decoded(&hex::encode(rs_prepare()));
    assert_has(
        &json,
        &[
            r#""amount":107"#,
            r#""expiresAt":"2018-06-07T20:48:42.483Z""#,
            &format!(r#""data":"{RS_DATA}""#),
        ],
    );
    let json = decoded(&hex::encode(rs_fulfill()));
    assert_has(&json, &[&format!(r#""fulfillment":"{RS_CONDITION}""#)]);
    let json = decoded(&hex::encode(rs_reject()));
    assert_has(
        &json,
        &[
            r#""code":"F99""#,
            r#""triggeredBy":"example.connector""#,
            r#""message":"Some error""#,
        ],
    );
}

#[test]
fn ildcp_vectors() {
    let json = decoded(ILDCP_REQUEST);
    assert_has(
        &json,
        &[
            r#""amount":0"#,
            r#""destination":"peer.config""#,
            r#""expiresAt":"2015-06-16T00:01:00.000Z""#,
            r#""ildcpRequest":true"#,
        ],
    );
    let json = decoded(ILDCP_RESPONSE);
    assert_has(
        &json,
        &[r#""ildcp":{"clientAddress":"example.client","assetScale":13,"assetCode":"XAM"}"#],
    );
    let json = decoded(ILDCP_REJECT_THREW);
    assert_has(
        &json,
        &[
            r#""code":"F00""#,
            r#""triggeredBy":"example.server""#,
            r#""message":"something bad occurred in the neighborhood.""#,
        ],
    );
    let json = decoded(ILDCP_REJECT_UNEXPECTED);
    assert_has(&json, &[r#""message":"unexpected error.""#]);
}

const JS_PROTOCOL_DATA: &str = r#""protocolData":[{"name":"ilp","contentType":0,"mimeType":"application/octet-stream","data":"","ilpError":"invalid ILP packet: unexpected end of input: needed 1 bytes, 0 left at offset 0"},{"name":"foo","contentType":0,"mimeType":"application/octet-stream","data":"626172"},{"name":"beep","contentType":1,"mimeType":"text/plain; charset=utf-8","data":"626f6f70","text":"boop"},{"name":"json","contentType":2,"mimeType":"application/json","data":"7b7d","text":"{}"}]"#;

#[test]
fn btp_js_vectors() {
    let json = decoded(BTP_JS_RESPONSE);
    assert_eq!(
        json,
        format!(
            r#"{{"layer":"btp","type":"response","typeId":1,"requestId":1,{JS_PROTOCOL_DATA}}}"#
        )
    );
    let json = decoded(BTP_JS_MESSAGE);
    assert_has(&json, &[r#""type":"message","typeId":6"#, JS_PROTOCOL_DATA]);
    let json = decoded(BTP_JS_TRANSFER);
    assert_has(
        &json,
        &[r#""type":"transfer""#, r#""amount":100"#, JS_PROTOCOL_DATA],
    );
    let json = decoded(BTP_JS_ERROR);
    assert_has(
        &json,
        &[
            r#""type":"error""#,
            r#""code":"L13""#,
            r#""name":"errorName""#,
            r#""triggeredAt":"2017-08-28T18:32:00.000Z""#,
            r#""data":"626f6f","dataText":"boo""#,
            JS_PROTOCOL_DATA,
        ],
    );
}

#[test]
fn btp_interledger_rs_and_auth_vectors() {
    let json = decoded(BTP_RS_MESSAGE);
    assert_has(
        &json,
        &[
            r#""requestId":2"#,
            r#"{"name":"test","contentType":0,"mimeType":"application/octet-stream","data":"ffff"}"#,
            r#""text":"hello""#,
        ],
    );
    let json = decoded(BTP_RS_RESPONSE);
    assert_has(
        &json,
        &[r#""requestId":129"#, r#""name":"some other protocol""#],
    );
    let json = decoded(BTP_RS_ERROR);
    assert_has(
        &json,
        &[
            r#""requestId":501"#,
            r#""code":"T00","codeName":"UnreachableError","name":"UnreachableError""#,
            r#""triggeredAt":"2018-08-31T02:53:24.899Z""#,
            r#""dataText":"oops""#,
            r#""protocolData":[]"#,
        ],
    );
    let json = decoded(BTP_AUTH);
    assert_has(
        &json,
        &[
            r#"{"name":"auth","contentType":0"#,
            r#""name":"auth_username","contentType":1,"mimeType":"text/plain; charset=utf-8","data":"616c696365","text":"alice""#,
            r#""name":"auth_token""#,
            r#""text":"secret""#,
        ],
    );
    let json = decoded(BTP_AUTH_RESPONSE);
    assert_eq!(
        json,
        r#"{"layer":"btp","type":"response","typeId":1,"requestId":1,"protocolData":[]}"#
    );
    let json = decoded(&hex::encode(BTP_RS_FUZZ_11));
    assert_has(&json, &[r#"{"name":"","contentType":253,"data":"00"}"#]);
}

#[test]
fn btp_carrying_ilp_is_decoded_to_the_bottom() {
    let json = decoded(&hex::encode(btp_prepare_message()));
    assert_has(
        &json,
        &[
            r#""type":"message""#,
            r#""requestId":123"#,
            &format!(r#""data":"{ILP_PREPARE}","ilp":{{"layer":"ilp","type":"prepare""#),
            r#""amount":107"#,
            r#""destination":"example.alice""#,
        ],
    );
    let json = decoded(&hex::encode(btp_fulfill_response()));
    assert_has(
        &json,
        &[
            r#""type":"response""#,
            r#""ilp":{"layer":"ilp","type":"fulfill""#,
            &format!(r#""fulfillment":"{ILP_FULFILLMENT}""#),
        ],
    );
}

#[test]
fn reads_stdin_with_whitespace() {
    let spaced: String = ILP_PREPARE
        .as_bytes()
        .chunks(16)
        .map(|chunk| std::str::from_utf8(chunk).unwrap())
        .collect::<Vec<_>>()
        .join(" \n\t");
    let expected = decoded(ILP_PREPARE);
    for args in [&["-"][..], &[][..]] {
        let run = decode(args, Some(&format!("  {spaced}\n")));
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(run.stdout.trim_end(), expected);
    }
    // Uppercase hex is hex too.
    assert_eq!(decoded(&ILP_PREPARE.to_uppercase()), expected);
}

#[test]
fn refuses_bad_input_with_status_2_and_one_line() {
    refused(&[], Some(""), "error: no input");
    refused(
        &["zz"],
        None,
        "error: invalid hex: Invalid character 'z' at position 0",
    );
    refused(&["0c6"], None, "error: invalid hex: Odd number of digits");
    refused(
        &["05000000"],
        None,
        "error: unknown packet type 5 at offset 0: neither ILP",
    );
    // A truncated Prepare: the envelope announces 104 bytes, 1 follows.
    refused(
        &["0c6800"],
        None,
        "error: invalid ILP packet: length 104 runs past the end of the input (1 bytes left) at offset 1",
    );
    // The Prepare with one byte too many after it.
    refused(
        &[&format!("{ILP_PREPARE}00")],
        None,
        "error: invalid ILP packet: 1 unexpected trailing bytes at offset 106",
    );
    // Indefinite length.
    refused(
        &["0d80"],
        None,
        "error: invalid ILP packet: indefinite length (0x80) is not allowed at offset 1",
    );
    // A Prepare to a bad address: "example.alice" -> "example!alice".
    let bad_address =
        ILP_PREPARE.replace("6578616d706c652e616c696365", "6578616d706c6521616c696365");
    let line = refused(
        &[&bad_address],
        None,
        "error: invalid ILP packet: invalid destination",
    );
    assert!(line.ends_with("at offset 59"), "{line}");
    // BTP: a name used twice, at the second entry.
    refused(
        &["060000000109010200000000000000"],
        None,
        "error: invalid BTP packet: protocol name already used by an earlier entry at offset 11",
    );
    refused(
        &["06000001010781010101060100"],
        None,
        "error: invalid BTP packet: length prefix is not minimally encoded at offset 6",
    );
    for (name, bytes) in BTP_RS_FUZZ_MUST_FAIL {
        if bytes.is_empty() {
            continue;
        }
        let line = refused(&[&hex::encode(bytes)], None, "error: invalid BTP packet: ");
        assert!(line.contains(" at offset "), "{name}: {line}");
    }
    refused(
        &["a", "b"],
        None,
        "error: decode takes at most one argument",
    );
}

#[test]
fn escapes_text_and_decodes_amount_too_large() {
    use ilp_plugin_lightning::ilp::{ErrorCode, MaxPacketAmountDetails, RejectBuilder};
    let details = MaxPacketAmountDetails {
        received: 1000,
        maximum: 300,
    }
    .to_bytes();
    let reject = RejectBuilder {
        code: ErrorCode::F08_AMOUNT_TOO_LARGE,
        triggered_by: "test.hub",
        message: "say \"hi\"\\\n\t\u{1}é",
        data: &details,
    }
    .build()
    .unwrap()
    .to_bytes();
    let json = decoded(&hex::encode(reject));
    assert_has(
        &json,
        &[
            r#""code":"F08","codeName":"Amount Too Large""#,
            r#""message":"say \"hi\"\\\n\t\u0001é""#,
            r#""amountTooLarge":{"receivedAmount":1000,"maximumAmount":300}"#,
        ],
    );
}

//! The fuzzers' findings as ordinary tests: the committed corpus (`tests/fuzz/corpus/TARGET`)
//! and every crash input (`tests/fuzz/regressions/TARGET`) replayed through the fuzz targets'
//! own bodies (`tests/fuzz/src/lib.rs`, included here, not copied), and the reference vectors
//! the corpus was seeded from checked to be in it and to get the answer they should.
//!
//! `tests/fuzz/run.sh` runs the fuzzers themselves (libFuzzer).

use std::collections::BTreeMap;
use std::fs;
use std::panic::catch_unwind;
use std::path::{Path, PathBuf};

use ilp_plugin_lightning::btp::{auth_message, Packet as BtpPacket};
use ilp_plugin_lightning::ilp::{
    ErrorCode, MaxPacketAmountDetails, Packet as IlpPacket, RejectBuilder,
};
use ilp_plugin_lightning::lnd::proto::lightning;
use ilp_plugin_lightning::lnd::Preimage;
use protobuf::Message as _;

#[path = "fuzz/src/lib.rs"]
#[allow(dead_code)]
mod fuzz_targets;
mod vectors;

use fuzz_targets::{Outcome, Target, TARGETS};
use vectors::*;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz")
}

fn target(name: &str) -> Target {
    TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .unwrap_or_else(|| panic!("no fuzz target {name}"))
}

/// The files of `dir`, sorted by name; none when it does not exist.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .map(|entry| entry.expect("readable folder entry").path())
        .filter(|path| path.is_file())
        .map(|path| {
            let bytes = fs::read(&path).expect("readable corpus file");
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

/// Runs `target` on every file; returns (accepted, rejected) counts and the files that panicked.
fn replay(target: Target, files: &[(PathBuf, Vec<u8>)]) -> (usize, usize, Vec<String>) {
    let (mut accepted, mut rejected, mut panicked) = (0, 0, Vec::new());
    for (path, bytes) in files {
        match catch_unwind(|| target(bytes)) {
            Ok(Outcome::Accepted) => accepted += 1,
            Ok(Outcome::Rejected) => rejected += 1,
            Err(_) => panicked.push(path.display().to_string()),
        }
    }
    (accepted, rejected, panicked)
}

#[test]
fn every_target_has_a_fuzz_binary_and_a_corpus() {
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for (name, _) in TARGETS {
        let binary = format!("fuzz_targets/{name}.rs");
        assert!(fuzz_dir().join(&binary).is_file(), "{binary} is missing");
        assert!(
            manifest.contains(&format!("name = \"{name}\"\npath = \"{binary}\"")),
            "tests/fuzz/Cargo.toml has no [[bin]] {name}"
        );
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        assert!(
            corpus.len() >= 3,
            "corpus/{name} has {} files",
            corpus.len()
        );
        // The committed corpus stays small: minimised, small files.
        let too_big: Vec<_> = corpus.iter().filter(|(_, b)| b.len() > 4096).collect();
        assert!(too_big.is_empty(), "corpus files over 4 KiB: {too_big:?}");
    }
    let binaries = fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .unwrap()
        .count();
    assert_eq!(
        binaries,
        TARGETS.len(),
        "a fuzz binary without a TARGETS entry"
    );
}

#[test]
fn corpus_and_crash_inputs_replay_without_a_panic() {
    let mut panicked = Vec::new();
    for (name, target) in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        let (accepted, rejected, mut failed) = replay(*target, &corpus);
        // A corpus that reaches only one outcome has lost what the fuzzer found.
        assert!(accepted > 0, "no input of corpus/{name} is accepted");
        assert!(rejected > 0, "no input of corpus/{name} is rejected");
        panicked.append(&mut failed);
        // Inputs that once crashed a target (kept apart from the corpus, which a merge rewrites).
        let crashes = files(&fuzz_dir().join("regressions").join(name));
        panicked.append(&mut replay(*target, &crashes).2);
    }
    assert!(panicked.is_empty(), "panicked on {panicked:#?}");
    // Every folder of crash inputs belongs to a target.
    if let Ok(dirs) = fs::read_dir(fuzz_dir().join("regressions")) {
        for dir in dirs {
            let name = dir.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                name.starts_with('.') || TARGETS.iter().any(|(n, _)| *n == name),
                "regressions/{name} is no target"
            );
        }
    }
}

/// One seed: its file name, its bytes, and the outcome it must get.
type Seed = (String, Vec<u8>, Outcome);

/// The seeds: reference vectors (tests/vectors, shared/reference/interledger.md) and LND
/// answers shaped as LND sends them, by target, with the outcome each must get. They are
/// committed in the corpus as `seed-<name>`.
fn seeds() -> BTreeMap<&'static str, Vec<Seed>> {
    use Outcome::{Accepted, Rejected};
    let mut seeds: BTreeMap<&str, Vec<Seed>> = BTreeMap::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>, outcome: Outcome| {
        seeds
            .entry(target)
            .or_default()
            .push((format!("seed-{name}"), bytes, outcome));
    };

    let f08 = RejectBuilder {
        code: ErrorCode::F08_AMOUNT_TOO_LARGE,
        triggered_by: "example.hub",
        message: "packet amount 200 is above the maximum of 100",
        data: &MaxPacketAmountDetails {
            received: 200,
            maximum: 100,
        }
        .to_bytes(),
    }
    .build()
    .unwrap()
    .to_bytes();
    let ilp = [
        ("ilp_prepare", unhex(ILP_PREPARE)),
        ("ilp_fulfill", unhex(ILP_FULFILL)),
        ("ilp_reject", unhex(ILP_REJECT)),
        (
            "ilp_reject_empty_triggered_by",
            unhex(ILP_REJECT_EMPTY_TRIGGERED_BY),
        ),
        ("rs_prepare", rs_prepare()),
        ("rs_fulfill", rs_fulfill()),
        ("rs_reject", rs_reject()),
        ("ildcp_request", unhex(ILDCP_REQUEST)),
        ("ildcp_response", unhex(ILDCP_RESPONSE)),
        ("ildcp_reject_threw", unhex(ILDCP_REJECT_THREW)),
        ("f08_reject", f08),
    ];
    for (name, bytes) in &ilp {
        add("ilp_packet", name, bytes.clone(), Accepted);
    }
    add(
        "ilp_packet",
        "truncated_prepare",
        unhex(ILP_PREPARE)[..50].to_vec(),
        Rejected,
    );

    let ildcp_response = unhex(ILDCP_RESPONSE);
    let response_data = match IlpPacket::parse(&ildcp_response).unwrap() {
        IlpPacket::Fulfill(fulfill) => fulfill.data().to_vec(),
        other => panic!("IL-DCP response vector is a {:?}", other.packet_type()),
    };
    add("ildcp", "response", ildcp_response, Accepted);
    add("ildcp", "response_data", response_data, Accepted);
    add("ildcp", "reject_threw", unhex(ILDCP_REJECT_THREW), Rejected);
    add(
        "ildcp",
        "reject_unexpected",
        unhex(ILDCP_REJECT_UNEXPECTED),
        Rejected,
    );
    add("ildcp", "request", unhex(ILDCP_REQUEST), Rejected);

    let btp = [
        ("js_response", unhex(BTP_JS_RESPONSE)),
        ("js_message", unhex(BTP_JS_MESSAGE)),
        ("js_transfer", unhex(BTP_JS_TRANSFER)),
        ("js_error", unhex(BTP_JS_ERROR)),
        ("rs_message", unhex(BTP_RS_MESSAGE)),
        ("rs_response", unhex(BTP_RS_RESPONSE)),
        ("rs_error", unhex(BTP_RS_ERROR)),
        ("auth", unhex(BTP_AUTH)),
        ("auth_response", unhex(BTP_AUTH_RESPONSE)),
        ("prepare_message", btp_prepare_message()),
        ("fulfill_response", btp_fulfill_response()),
        ("rs_fuzz_11", BTP_RS_FUZZ_11.to_vec()),
    ];
    for (name, bytes) in &btp {
        add("btp_packet", name, bytes.clone(), Accepted);
        let packet = BtpPacket::parse(bytes).unwrap();
        let mut protocol_data = Vec::new();
        packet.protocol_data().write_to(&mut protocol_data);
        add("btp_protocol_data", name, protocol_data, Accepted);
    }
    for (name, bytes) in BTP_RS_FUZZ_MUST_FAIL {
        add("btp_packet", name, bytes.to_vec(), Rejected);
    }
    add(
        "btp_protocol_data",
        "rs_fuzz_14_1",
        BTP_RS_FUZZ_14_1_PROTOCOL_DATA.to_vec(),
        Accepted,
    );
    add(
        "btp_protocol_data",
        "duplicate_names",
        unhex("02 03616263 00 00 03616263 00 00"),
        Rejected,
    );

    add("btp_auth", "alice", unhex(BTP_AUTH), Accepted);
    add(
        "btp_auth",
        "token_only",
        auth_message(2, "", "a-long-enough-token"),
        Accepted,
    );
    add(
        "btp_auth",
        "bad_username",
        auth_message(3, "al.ice", "secret"),
        Rejected,
    );
    add("btp_auth", "not_auth", unhex(BTP_JS_MESSAGE), Rejected);
    add("btp_auth", "response", unhex(BTP_AUTH_RESPONSE), Rejected);

    for (name, uri, outcome) in [
        (
            "full",
            "btp+ws://alice:s%40cret@127.0.0.1:7768/btp",
            Accepted,
        ),
        ("ipv6", "btp+ws://:token@[::1]:7768", Accepted),
        ("no_port_query", "BTP+WS://localhost?account=x", Accepted),
        ("user_only", "btp+ws://bob@example.com:80/", Accepted),
        ("wss", "btp+wss://example.com", Rejected),
        ("bad_escape", "btp+ws://a:%zz@host", Rejected),
        ("unclosed_bracket", "btp+ws://[::1:7768", Rejected),
        ("port_zero", "btp+ws://host:0", Rejected),
    ] {
        add("btp_uri", name, uri.as_bytes().to_vec(), outcome);
    }

    let mut info = lightning::GetInfoResponse::new();
    info.identity_pubkey =
        "03eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619".into();
    info.alias = "alice".into();
    info.version = "0.19.0-beta commit=v0.19.0-beta".into();
    info.block_height = 812_000;
    let mut chain = lightning::Chain::new();
    chain.chain = "bitcoin".into();
    chain.network = "regtest".into();
    info.chains.push(chain);
    add(
        "lnd_get_info",
        "regtest",
        info.write_to_bytes().unwrap(),
        Accepted,
    );
    info.chains.clear();
    info.testnet = true;
    add(
        "lnd_get_info",
        "old_testnet_flag",
        info.write_to_bytes().unwrap(),
        Accepted,
    );
    info.identity_pubkey = "04eec7".into();
    add(
        "lnd_get_info",
        "bad_pubkey",
        info.write_to_bytes().unwrap(),
        Rejected,
    );

    let preimage = Preimage([4; 32]);
    let mut invoice = lightning::Invoice::new();
    invoice.memo = "ilp".into();
    invoice.r_hash = preimage.payment_hash().0.to_vec();
    invoice.r_preimage = preimage.0.to_vec();
    invoice.payment_request = "lnbcrt1pjz9example".into();
    invoice.expiry = 3600;
    invoice.creation_date = 1_700_000_000;
    invoice.add_index = 7;
    add(
        "lnd_invoice",
        "open",
        invoice.write_to_bytes().unwrap(),
        Accepted,
    );
    invoice.state = lightning::invoice::InvoiceState::SETTLED.into();
    invoice.settle_index = 2;
    invoice.settle_date = 1_700_000_060;
    invoice.amt_paid_msat = 12_345;
    invoice.is_keysend = true;
    let mut htlc = lightning::InvoiceHTLC::new();
    htlc.amt_msat = 12_345;
    // One record only: protobuf writes a map in hash order, and a seed must not change.
    htlc.custom_records.insert(
        ilp_plugin_lightning::lnd::KEYSEND_RECORD_TYPE,
        preimage.0.to_vec(),
    );
    invoice.htlcs.push(htlc);
    add(
        "lnd_invoice",
        "settled_keysend",
        invoice.write_to_bytes().unwrap(),
        Accepted,
    );
    invoice.amt_paid_msat = -1;
    add(
        "lnd_invoice",
        "negative_amount",
        invoice.write_to_bytes().unwrap(),
        Rejected,
    );

    let hash = preimage.payment_hash();
    let mut payment = lightning::Payment::new();
    payment.payment_hash = hash.to_hex();
    payment.value_msat = 50_000;
    payment.status = lightning::payment::PaymentStatus::SUCCEEDED.into();
    payment.payment_preimage = preimage.to_hex();
    payment.fee_msat = 1_001;
    let with_selector = |selector: u8, payment: &lightning::Payment| {
        let mut bytes = vec![selector];
        bytes.extend(payment.write_to_bytes().unwrap());
        bytes
    };
    add(
        "lnd_payment",
        "succeeded",
        with_selector(0, &payment),
        Accepted,
    );
    add(
        "lnd_payment",
        "succeeded_as_asked",
        with_selector(1, &payment),
        Accepted,
    );
    add(
        "lnd_payment",
        "other_hash",
        with_selector(2, &payment),
        Rejected,
    );
    payment.status = lightning::payment::PaymentStatus::FAILED.into();
    payment.payment_preimage.clear();
    payment.failure_reason = lightning::PaymentFailureReason::FAILURE_REASON_NO_ROUTE.into();
    add(
        "lnd_payment",
        "failed_no_route",
        with_selector(0, &payment),
        Accepted,
    );
    payment.status = lightning::payment::PaymentStatus::IN_FLIGHT.into();
    payment.payment_hash.clear();
    add(
        "lnd_payment",
        "in_flight_no_hash",
        with_selector(0, &payment),
        Rejected,
    );
    seeds
}

#[test]
fn reference_vectors_are_in_the_corpus_and_get_their_outcome() {
    let seeds = seeds();
    assert_eq!(seeds.len(), TARGETS.len(), "every target has seeds");
    for (name, seeds) in &seeds {
        let target = target(name);
        for (file, bytes, outcome) in seeds {
            assert_eq!(target(bytes), *outcome, "{name}/{file}");
            let path = fuzz_dir().join("corpus").join(name).join(file);
            let committed = fs::read(&path).unwrap_or_else(|e| {
                panic!("{} ({e}): run this file's write_seeds", path.display())
            });
            assert_eq!(
                &committed,
                bytes,
                "{} differs from its vector",
                path.display()
            );
        }
    }
}

/// Writes the seeds into the corpus (a tool, not a check): after a change to the vectors,
/// `cargo test --test fuzz_corpus -- --ignored write_seeds`.
#[test]
#[ignore = "writes tests/fuzz/corpus"]
fn write_seeds() {
    for (name, seeds) in seeds() {
        let dir = fuzz_dir().join("corpus").join(name);
        fs::create_dir_all(&dir).unwrap();
        for (file, bytes, _) in seeds {
            fs::write(dir.join(file), bytes).unwrap();
        }
    }
}

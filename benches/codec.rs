//! Codec speed: ILP Prepare/Fulfill/Reject parse and serialize, and parsing a BTP Message that
//! carries a Prepare (the §1.7 vectors of the reference notes). Goal on the project machines:
//! Prepare parse ≤ 100 ns, serialize ≤ 150 ns (interledger-rs: about 355 ns each).
//!
//! `cargo bench --bench codec`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use ilp_plugin_lightning::{btp, ilp};

#[path = "../tests/vectors/mod.rs"]
mod vectors;

fn ilp_packets(c: &mut Criterion) {
    let cases = [
        ("prepare", vectors::unhex(vectors::ILP_PREPARE)),
        ("fulfill", vectors::unhex(vectors::ILP_FULFILL)),
        ("reject", vectors::unhex(vectors::ILP_REJECT)),
    ];
    for (name, bytes) in &cases {
        c.bench_function(&format!("ilp/{name}/parse"), |b| {
            b.iter(|| ilp::Packet::parse(black_box(bytes)).unwrap())
        });
        let packet = ilp::Packet::parse(bytes).unwrap();
        c.bench_function(&format!("ilp/{name}/serialize"), |b| {
            b.iter(|| black_box(&packet).to_bytes())
        });
    }
}

fn btp_message(c: &mut Criterion) {
    let bytes = vectors::btp_prepare_message();
    c.bench_function("btp/message_with_prepare/parse", |b| {
        b.iter(|| {
            let message = btp::Message::parse(black_box(&bytes)).unwrap();
            message.protocol_data().ilp().unwrap().len()
        })
    });
}

criterion_group!(benches, ilp_packets, btp_message);
criterion_main!(benches);

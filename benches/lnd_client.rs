//! Throughput of `GrpcLightning` against the simulator over real gRPC + TLS on loopback:
//! invoices created per second and payments per second, from 1 and from 8 threads.
//!
//! `cargo bench --bench lnd_client` (criterion reports time per operation; operations per
//! second are its reciprocal, shown as "thrpt").

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ilp_plugin_lightning::lnd::grpc::GrpcLightning;
use ilp_plugin_lightning::lnd::sim::{ChannelPolicy, SimNetwork, SimNode};
use ilp_plugin_lightning::lnd::{Lightning, PaymentLimits, PaymentStatus};

fn connect(node: &SimNode) -> GrpcLightning {
    GrpcLightning::builder()
        .port(node.port())
        .tls_cert(node.tls_cert_pem())
        .macaroon(node.macaroon())
        .connect()
        .expect("connect to the simulator")
}

/// Runs `ops` operations split over `threads` threads and returns the wall time.
fn run_parallel(threads: u64, ops: u64, op: impl Fn(u64) + Sync) -> Duration {
    let per_thread = ops.div_ceil(threads);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let op = &op;
            std::thread::Builder::new()
                .name(format!("bench-{t}"))
                .spawn_scoped(scope, move || {
                    for i in 0..per_thread {
                        op(t * per_thread + i);
                    }
                })
                .expect("spawn bench thread");
        }
    });
    start.elapsed()
}

fn lnd_client(c: &mut Criterion) {
    let net = SimNetwork::builder()
        .node("alice")
        .node("bob")
        .channel("alice", "bob", 100_000_000, ChannelPolicy::LND_DEFAULT)
        .start()
        .expect("start the simulator");
    let alice = connect(net.node("alice").unwrap());
    let bob = connect(net.node("bob").unwrap());
    let limits = PaymentLimits {
        fee_limit_msat: 10_000,
        timeout: Duration::from_secs(30),
    };

    let mut group = c.benchmark_group("lnd_client");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    for threads in [1u64, 8] {
        group.bench_function(format!("add_invoice/{threads}_threads"), |b| {
            b.iter_custom(|ops| {
                run_parallel(threads, ops, |_| {
                    bob.add_invoice(Duration::from_secs(3600), None)
                        .expect("add invoice");
                })
            })
        });
        group.bench_function(format!("pay_invoice/{threads}_threads"), |b| {
            b.iter_custom(|ops| {
                // Invoices are made beforehand: only paying is timed.
                let invoices: Vec<String> = (0..ops.div_ceil(threads) * threads)
                    .map(|_| {
                        bob.add_invoice(Duration::from_secs(3600), None)
                            .expect("add invoice")
                            .payment_request
                    })
                    .collect();
                run_parallel(threads, ops, |i| {
                    let outcome = alice
                        .pay_invoice(&invoices[i as usize], 1_000, limits)
                        .expect("pay");
                    assert!(matches!(outcome.status, PaymentStatus::Succeeded { .. }));
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, lnd_client);
criterion_main!(benches);

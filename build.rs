//! Compiles the LND protocol subset in `proto/` into Rust messages with protobuf-codegen's pure
//! Rust parser, so that no `protoc` is needed. grpcio's own code generator only speaks protobuf 2,
//! so the gRPC method descriptors are written by hand in `src/lnd/`.

fn main() {
    let inputs = [
        "proto/lightning.proto",
        "proto/routerrpc/router.proto",
        "proto/invoicesrpc/invoices.proto",
    ];
    for input in inputs {
        println!("cargo:rerun-if-changed={input}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    protobuf_codegen::Codegen::new()
        .pure()
        .includes(["proto"])
        .inputs(inputs)
        .cargo_out_dir("proto")
        .run_from_script();
}

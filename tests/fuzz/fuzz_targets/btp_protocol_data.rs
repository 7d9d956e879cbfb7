#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ilp_plugin_lightning_fuzz::btp_protocol_data(data);
});

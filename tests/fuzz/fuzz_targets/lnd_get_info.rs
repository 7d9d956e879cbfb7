#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ilp_plugin_lightning_fuzz::lnd_get_info(data);
});

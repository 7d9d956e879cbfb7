//! libFuzzer entry point: see src/lib.rs.
#![no_main]

ilp_plugin_lightning_fuzz::fuzz_target!(lnd_get_info);

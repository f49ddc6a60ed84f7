#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_fuzz::rpc_envelope(data));

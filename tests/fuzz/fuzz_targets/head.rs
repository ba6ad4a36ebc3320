#![no_main]
//! `kanoclip::fuzzing::head` (see src/fuzzing.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kanoclip::fuzzing::run("head", data, WEIGHTS);
});

static WEIGHTS: &[u8] = include_bytes!("../../fixtures/tiny_quickgelu.safetensors");

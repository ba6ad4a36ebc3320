#![no_main]
//! `kanoclip::fuzzing::llm_reply` (see src/fuzzing.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kanoclip::fuzzing::run("llm_reply", data, WEIGHTS);
});

static WEIGHTS: &[u8] = include_bytes!("../../fixtures/tiny_quickgelu.safetensors");

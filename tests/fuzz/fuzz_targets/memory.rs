#![no_main]
//! `kanoclip::fuzzing::memory` (see src/fuzzing.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kanoclip::fuzzing::run("memory", data, &[]);
});

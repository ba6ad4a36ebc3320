//! The README's library example is the code of `examples/detect.rs` (which the test run
//! executes), so it cannot drift.

#[test]
fn the_readme_library_example_is_the_example_file() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let example = std::fs::read_to_string(format!("{root}/examples/detect.rs")).unwrap();
    let section = &readme[readme.find("## Library").expect("a Library section")..];
    let block = &section[section.find("```rust\n").unwrap() + 8..];
    let block = &block[..block.find("```").unwrap()];
    let start = example.find("// README: begin\n").unwrap() + 17;
    let end = example.find("    // README: end").unwrap();
    let code: String = example[start..end]
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(block, code);
}

//! Tokenizer parity with open_clip's `get_tokenizer('ViT-B-32')` on 246 strings.

mod common;

use kanoclip::clip::Tokenizer;

#[test]
fn ids_equal_open_clip_on_every_fixture_string() {
    let fixture = common::read_json("tokenizer.json");
    let tokenizer = Tokenizer::new().unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 200);
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let got = tokenizer.tokenize(text, 77).unwrap();
        if got != want {
            failures.push(format!("{text:?}\n   got  {got:?}\n   want {want:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn known_ids_by_hand() {
    // From CLIP's published example: "a diagram" → [49406, 320, 22697, 49407].
    let t = Tokenizer::new().unwrap();
    assert_eq!(
        &t.tokenize("a diagram", 77).unwrap()[..5],
        &[49406, 320, 22697, 49407, 0]
    );
    // Truncation keeps EOT last.
    let long = t.tokenize(&"word ".repeat(200), 10).unwrap();
    assert_eq!(long.len(), 10);
    assert_eq!(long[9], 49407);
    assert!(t.tokenize("x", 1).is_err());
}

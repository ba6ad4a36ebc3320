//! Each JS-facing shape against its TypeScript counterpart in `pkg/src`.

use super::*;
use crate::detect::bundle::BundleFile;
use crate::detect::{AnomalyMap, Timings};

/// The field names of a TypeScript `export interface NAME { … }` (top level only).
fn ts_fields(source: &str, name: &str) -> Vec<String> {
    let start = source
        .find(&format!("export interface {name} {{"))
        .unwrap_or_else(|| panic!("interface {name} not found"));
    let body = &source[start..];
    let body = &body[body.find('{').unwrap() + 1..body.find("\n}").unwrap()];
    let mut out: Vec<String> = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("/**") && !l.starts_with('*') && !l.is_empty())
        .filter_map(|l| l.split(':').next())
        .map(|f| f.trim_end_matches('?').to_string())
        .collect();
    out.sort();
    out
}

fn json_fields(v: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    out.sort();
    out
}

fn fields(v: impl Serialize) -> Vec<String> {
    json_fields(&serde_json::to_value(v).unwrap())
}

const PROTOCOL: &str = include_str!("../../../pkg/src/protocol.ts");
const WEIGHTS: &str = include_str!("../../../pkg/src/weights.ts");
const ERRORS: &str = include_str!("../../../pkg/src/errors.ts");

#[test]
fn the_detection_result_has_the_rust_fields() {
    let d = Detection {
        score: 0.5,
        is_anomalous: false,
        threshold: 0.6,
        global_probability: 0.4,
        map: AnomalyMap {
            width: 1,
            height: 1,
            values: vec![0.0],
        },
        timings: Timings::default(),
    };
    let js = serde_json::to_value(JsDetection::new(&d, "cpu", 1.0)).unwrap();
    let mut want = json_fields(&js);
    // The map crosses beside the object, as a Float32Array.
    want.push("map".into());
    want.sort();
    assert_eq!(ts_fields(PROTOCOL, "DetectionResult"), want);
    assert_eq!(ts_fields(PROTOCOL, "Timings"), json_fields(&js["timings"]));
}

#[test]
fn the_package_forms_groups_as_the_crate_does() {
    use crate::detect::mutual::{DEFAULT_GROUP, MAX_GROUP, MIN_GROUP};
    const GROUPS: &str = include_str!("../../../pkg/src/groups.ts");
    for (name, value) in [
        ("DEFAULT_GROUP", DEFAULT_GROUP),
        ("MIN_GROUP", MIN_GROUP),
        ("MAX_GROUP", MAX_GROUP),
    ] {
        let line = format!("export const {name} = {value};");
        assert!(GROUPS.contains(&line), "pkg/src/groups.ts lacks `{line}`");
    }
}

#[test]
fn the_group_info_has_the_rust_fields() {
    use crate::detect::Scored;
    let alone = JsGroupInfo::new(&Scored::Alone { why: "few".into() }, 2);
    assert_eq!(ts_fields(PROTOCOL, "GroupInfo"), fields(&alone));
    assert_eq!((alone.scored_as, alone.group_size), ("alone", 2));
    let mutual = JsGroupInfo::new(&Scored::Mutual { group: 5 }, 5);
    assert_eq!(
        (mutual.scored_as, mutual.group_size, mutual.fallback),
        ("mutual", 5, None)
    );
}

#[test]
fn reference_info_and_calibration_have_the_rust_fields() {
    let skipped = SkippedImage {
        name: "a.png".into(),
        error: "bad".into(),
    };
    assert_eq!(ts_fields(PROTOCOL, "SkippedImage"), fields(&skipped));
    let info = ReferenceInfo {
        count: 1,
        names: vec!["b.png".into()],
        bytes: 4,
        rows: vec![2],
        weight: 0.5,
        skipped: vec![skipped],
    };
    assert_eq!(ts_fields(PROTOCOL, "ReferenceInfo"), fields(&info));
    let cal = crate::detect::calibration_rule(&[0.1, 0.2, 0.3]).unwrap();
    let js = JsCalibration::from(&cal);
    // The statistics are the rule's own (hand-computed: mean 0.2, population std
    // sqrt(0.02/3), max 0.3; the threshold is mean + 3·std, above max + 1e-4).
    let std = (0.02f64 / 3.0).sqrt();
    assert!((js.mean - 0.2).abs() < 1e-12 && (js.std - std).abs() < 1e-12);
    assert!((js.mean_plus_3_std - (0.2 + 3.0 * std)).abs() < 1e-12);
    assert_eq!(js.threshold, js.mean_plus_3_std.max(0.3 + 1e-4));
    assert_eq!((js.images, js.max), (3, 0.3));
    assert_eq!(ts_fields(PROTOCOL, "CalibrationStats"), fields(&js));
}

#[test]
fn the_manifest_the_package_reads_is_the_rust_manifest() {
    let file = BundleFile {
        name: "vision".into(),
        size: 1,
        sha256: "0".repeat(64),
        chunks: vec![crate::detect::bundle::Chunk {
            path: "p".into(),
            size: 1,
            sha256: "0".repeat(64),
        }],
    };
    let files = [file];
    let js = JsManifest {
        format: "kanoclip-web/1",
        name: "n",
        notice: None,
        mode: "trained",
        threshold: 0.5,
        files: &files,
    };
    let v = serde_json::to_value(&js).unwrap();
    assert_eq!(ts_fields(WEIGHTS, "Manifest"), json_fields(&v));
    assert_eq!(
        ts_fields(WEIGHTS, "BundleFile"),
        json_fields(&v["files"][0])
    );
    assert_eq!(
        ts_fields(WEIGHTS, "Chunk"),
        json_fields(&v["files"][0]["chunks"][0])
    );
    // Every field the package reads is one the full manifest has: its schema denies
    // unknown fields, and the refusal lists the known ones.
    let err = serde_json::from_str::<Manifest>(r#"{"zzz": 1}"#)
        .unwrap_err()
        .to_string();
    for f in json_fields(&v) {
        assert!(
            err.contains(&format!("`{f}`")),
            "{f} is not a manifest field: {err}"
        );
    }
}

#[test]
fn every_error_kind_has_a_typescript_code() {
    // One error of each variant: its kind is listed.
    let io = std::io::Error::other("x");
    let errors = [
        Error::io(std::path::Path::new("f"), io),
        Error::Json(serde_json::from_str::<u8>("x").unwrap_err()),
        Error::Config(String::new()),
        Error::WeightsFormat(String::new()),
        Error::WeightsMismatch(Vec::new()),
        Error::Knowledge(String::new()),
        Error::Head(String::new()),
        Error::Integrity(String::new()),
        Error::Incompatible(String::new()),
        Error::Dataset(Vec::new()),
        Error::Image(String::new()),
        Error::TruncatedImage(String::new()),
        Error::ImageTooLarge {
            width: 1,
            height: 1,
            limit: 0,
        },
        Error::Invalid(String::new()),
        Error::NonFinite(String::new()),
        Error::BackendUnavailable(String::new()),
        Error::backend("x", "y"),
    ];
    for e in &errors {
        assert!(ERROR_KINDS.contains(&e.kind()), "{}", e.kind());
        let js = JsError::from(e);
        assert_eq!((js.kind, js.message), (e.kind(), e.to_string()));
    }
    assert_eq!(
        ts_fields(ERRORS, "WasmError"),
        fields(JsError::from(&errors[0]))
    );
    // The package's table has exactly these kinds.
    let table = &ERRORS[ERRORS.find("const KINDS").unwrap()..];
    let table = &table[..table.find("};").unwrap()];
    let mut ts: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, _)| k.trim_matches('\'').to_string())
        .collect();
    ts.sort();
    let mut rust: Vec<String> = ERROR_KINDS.iter().map(|k| k.to_string()).collect();
    rust.sort();
    assert_eq!(ts, rust);
}

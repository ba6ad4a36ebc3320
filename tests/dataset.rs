//! Data-set layouts, their bad inputs, and evaluation end to end on synthetic defects.

mod common;

use std::path::{Path, PathBuf};

use common::fixture;
use kanoclip::Error;
use kanoclip::clip::{Clip, Tokenizer};
use kanoclip::data::dataset::{Dataset, Format, Split};
use kanoclip::data::synth::{SynthConfig, Texture, generate};
use kanoclip::detect::{Detector, DetectorConfig};
use kanoclip::eval::evaluate::evaluate;
use kanoclip::eval::metrics::{auroc, average_precision};
use kanoclip::head::knowledge::KnowledgeBase;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kanoclip-ds-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn synth(dir: &Path) {
    let cfg = SynthConfig {
        size: 48,
        textures: vec![Texture::Grid, Texture::Wood],
        train_good: 2,
        test_good: 3,
        test_per_defect: 1,
        seed: 9,
    };
    generate(dir, &cfg).unwrap();
}

fn problems(e: Error) -> Vec<String> {
    match e {
        Error::Dataset(p) => p,
        other => panic!("expected a data-set error, got {other}"),
    }
}

#[test]
fn mvtec_layout_loads_and_bad_ones_name_their_files() {
    let dir = scratch("mvtec");
    synth(&dir);
    let data = Dataset::load(&dir, Format::Mvtec).unwrap();
    assert_eq!(data.categories(), ["grid", "wood"]);
    let test: Vec<_> = data
        .samples
        .iter()
        .filter(|s| s.split == Split::Test)
        .collect();
    assert_eq!(test.len(), 2 * (3 + 5));
    assert!(test.iter().all(|s| s.label != s.masks.is_empty()));

    // A missing mask, a mask of the wrong size, an unreadable image: all named at once.
    std::fs::remove_file(dir.join("grid/ground_truth/crack/000_mask.png")).unwrap();
    image::GrayImage::new(10, 10)
        .save(dir.join("wood/ground_truth/hole/000_mask.png"))
        .unwrap();
    std::fs::write(dir.join("wood/test/good/bad.png"), b"not a png").unwrap();
    let p = problems(Dataset::load(&dir, Format::Mvtec).unwrap_err());
    assert!(
        p.iter()
            .any(|m| m.contains("grid/test/crack/000.png") && m.contains("no mask")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.contains("hole/000_mask.png") && m.contains("10×10")),
        "{p:?}"
    );
    // The unreadable image is no problem of the data set: it is set aside, with why, so
    // that one bad file never costs a run (eval lists it among its failures).
    assert!(!p.iter().any(|m| m.contains("bad.png")), "{p:?}");
    synth(&dir);
    let data = Dataset::load(&dir, Format::Mvtec).unwrap();
    let unreadable: Vec<&String> = data.unreadable.iter().map(|(_, why)| why).collect();
    assert!(
        unreadable.len() == 1
            && unreadable[0].contains("bad.png")
            && unreadable[0].contains("unreadable image"),
        "{unreadable:?}"
    );
    assert!(!data.samples.iter().any(|s| s.path.ends_with("bad.png")));
    assert!(matches!(
        Dataset::load(dir.join("missing"), Format::Mvtec).unwrap_err(),
        Error::Io { .. }
    ));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn loco_visa_and_folder_layouts_load() {
    let src = scratch("src");
    synth(&src);
    let img = |p: &str| src.join("grid").join(p);
    // MVTec LOCO: several masks per anomalous image, in a folder named after it.
    let loco = scratch("loco");
    let cat = loco.join("box");
    for (from, to) in [
        ("train/good/000.png", "train/good/000.png"),
        ("test/good/000.png", "test/good/000.png"),
        ("test/crack/000.png", "test/logical_anomalies/000.png"),
        (
            "ground_truth/crack/000_mask.png",
            "ground_truth/logical_anomalies/000/000.png",
        ),
        (
            "ground_truth/spot/000_mask.png",
            "ground_truth/logical_anomalies/000/001.png",
        ),
    ] {
        std::fs::create_dir_all(cat.join(to).parent().unwrap()).unwrap();
        std::fs::copy(img(from), cat.join(to)).unwrap();
    }
    let data = Dataset::load(&loco, Format::Loco).unwrap();
    let anomalous: Vec<_> = data.samples.iter().filter(|s| s.label).collect();
    assert_eq!(anomalous.len(), 1);
    assert_eq!(anomalous[0].masks.len(), 2);

    // VisA: split_csv/1cls.csv.
    let visa = scratch("visa");
    std::fs::create_dir_all(visa.join("split_csv")).unwrap();
    std::fs::create_dir_all(visa.join("candle")).unwrap();
    for (from, to) in [
        ("test/good/000.png", "n.png"),
        ("test/crack/000.png", "a.png"),
        ("ground_truth/crack/000_mask.png", "a_mask.png"),
    ] {
        std::fs::copy(img(from), visa.join("candle").join(to)).unwrap();
    }
    std::fs::write(
        visa.join("split_csv/1cls.csv"),
        "object,split,label,image,mask\ncandle,test,normal,candle/n.png,\ncandle,test,anomaly,candle/a.png,candle/a_mask.png\n",
    )
    .unwrap();
    let data = Dataset::load(&visa, Format::Visa).unwrap();
    assert_eq!(data.samples.len(), 2);
    assert_eq!(data.categories(), ["candle"]);
    std::fs::write(
        visa.join("split_csv/1cls.csv"),
        "object,image\ncandle,candle/n.png\n",
    )
    .unwrap();
    assert!(
        problems(Dataset::load(&visa, Format::Visa).unwrap_err())[0]
            .contains("expected the columns")
    );
    // CSV entries must stay inside the data root: `..`, absolute paths, in images and masks.
    for (image, mask) in [
        ("../outside.png", ""),
        ("/etc/passwd", ""),
        ("candle/../../x.png", ""),
        ("candle/a.png", "../../secret_mask.png"),
    ] {
        std::fs::write(
            visa.join("split_csv/1cls.csv"),
            format!("object,split,label,image,mask\ncandle,test,anomaly,{image},{mask}\n"),
        )
        .unwrap();
        let p = problems(Dataset::load(&visa, Format::Visa).unwrap_err());
        let bad = if mask.is_empty() { image } else { mask };
        assert!(
            p.iter().any(|m| m.contains("line 2")
                && m.contains(bad)
                && m.contains("leaves the data set")),
            "{image} / {mask}: {p:?}"
        );
    }

    // Folder: normal/, abnormal/, masks/.
    let folder = scratch("folder");
    for d in ["normal", "abnormal", "masks"] {
        std::fs::create_dir_all(folder.join(d)).unwrap();
    }
    std::fs::copy(img("test/good/000.png"), folder.join("normal/n.png")).unwrap();
    std::fs::copy(img("test/crack/000.png"), folder.join("abnormal/a.png")).unwrap();
    std::fs::copy(
        img("ground_truth/crack/000_mask.png"),
        folder.join("masks/a.png"),
    )
    .unwrap();
    let data = Dataset::load(&folder, Format::Folder).unwrap();
    assert_eq!(data.samples.iter().filter(|s| s.label).count(), 1);
    std::fs::remove_file(folder.join("masks/a.png")).unwrap();
    assert!(problems(Dataset::load(&folder, Format::Folder).unwrap_err())[0].contains("no mask"));
    for d in [src, loco, visa, folder] {
        std::fs::remove_dir_all(d).ok();
    }
}

#[test]
fn evaluation_reports_consistent_metrics_and_undefined_ones() {
    let dir = scratch("eval");
    synth(&dir);
    // A category without anomalies: its image metrics are undefined, not a crash.
    let calm = dir.join("calm/test/good");
    std::fs::create_dir_all(&calm).unwrap();
    std::fs::copy(dir.join("grid/test/good/000.png"), calm.join("000.png")).unwrap();
    std::fs::copy(dir.join("grid/test/good/001.png"), calm.join("001.png")).unwrap();
    let data = Dataset::load(&dir, Format::Mvtec).unwrap();
    let device = common::backends().remove(0).1;
    let clip = Clip::from_files(
        fixture("tiny_quickgelu_config.json"),
        fixture("tiny_quickgelu.safetensors"),
        &device,
    )
    .unwrap();
    let kb = KnowledgeBase::from_file(fixture("knowledge_small.json")).unwrap();
    let cfg = DetectorConfig::for_clip(&clip.config);
    let det = Detector::training_free(clip, &kb, &Tokenizer::new().unwrap(), cfg).unwrap();
    let mut seen = 0;
    let report = evaluate(&det, &data, |_| seen += 1).unwrap();
    assert_eq!(seen, 2 + 2 * 8);
    assert_eq!(report.scores.len(), seen);
    let calm = report
        .categories
        .iter()
        .find(|c| c.category == "calm")
        .unwrap();
    assert_eq!(
        (calm.image_auroc, calm.image_ap, calm.pixel_auroc),
        (None, None, None)
    );
    assert_eq!(
        calm.aupro, None,
        "AUPRO of a category without anomalies is undefined"
    );
    // Image metrics are the metrics of the reported scores.
    for c in report.categories.iter().filter(|c| c.category != "calm") {
        let rows: Vec<_> = report
            .scores
            .iter()
            .filter(|r| r.category == c.category)
            .collect();
        let s: Vec<f32> = rows.iter().map(|r| r.score).collect();
        let l: Vec<bool> = rows.iter().map(|r| r.label == 1).collect();
        assert_eq!(c.image_auroc, auroc(&s, &l));
        assert_eq!(c.image_ap, average_precision(&s, &l));
        assert!(c.pixel_auroc.is_some_and(|v| (0.0..=1.0).contains(&v)));
        assert!(c.aupro.is_some_and(|v| (0.0..=1.0).contains(&v)));
    }
    let means: Vec<f64> = report
        .categories
        .iter()
        .filter_map(|c| c.image_auroc)
        .collect();
    assert_eq!(
        report.mean.image_auroc,
        Some(means.iter().sum::<f64>() / means.len() as f64)
    );
    std::fs::remove_dir_all(dir).ok();
}

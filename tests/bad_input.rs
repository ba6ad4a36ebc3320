//! Bad inputs give typed errors, never panics: weights, configs and images.

mod common;

use std::io::Cursor;

use common::fixture;
use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, Rgb, Rgba};
use kanoclip::Error;
use kanoclip::clip::preprocess::{
    Geometry, decode_image, decode_image_lenient, load_image, preprocess,
};
use kanoclip::clip::{Clip, ClipConfig};
use kanoclip::device::{BackendKind, device};
use std::path::Path;

fn cpu() -> burn::prelude::Device {
    pollster::block_on(device(BackendKind::Cpu)).unwrap()
}

fn tiny_config() -> ClipConfig {
    ClipConfig::from_file(fixture("tiny_quickgelu_config.json")).unwrap()
}

fn tiny_weights() -> Vec<u8> {
    std::fs::read(fixture("tiny_quickgelu.safetensors")).unwrap()
}

#[test]
fn missing_files_are_io_errors() {
    let e = Clip::from_files(
        fixture("nope.json"),
        fixture("tiny_quickgelu.safetensors"),
        &cpu(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    let e = Clip::from_files(
        fixture("tiny_quickgelu_config.json"),
        fixture("nope.safetensors"),
        &cpu(),
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::Io { .. }) && e.to_string().contains("nope.safetensors"),
        "{e}"
    );
    assert!(matches!(
        load_image(fixture("nope.png")).unwrap_err(),
        Error::Io { .. }
    ));
}

#[test]
fn truncated_and_foreign_weights_are_format_errors() {
    let bytes = tiny_weights();
    for cut in [0, 7, 100, bytes.len() / 2, bytes.len() - 1] {
        let e = Clip::from_safetensors(&tiny_config(), &bytes[..cut], &cpu()).unwrap_err();
        assert!(matches!(e, Error::WeightsFormat(_)), "cut at {cut}: {e}");
    }
    let png = std::fs::read(fixture("images/tiny_quickgelu_0.png")).unwrap();
    assert!(matches!(
        Clip::from_safetensors(&tiny_config(), &png, &cpu()).unwrap_err(),
        Error::WeightsFormat(_)
    ));
}

/// Rewrite the fixture with some tensors replaced.
fn rewrite(
    replace: impl Fn(&str, safetensors::tensor::TensorView) -> Option<common::Replacement>,
) -> Vec<u8> {
    common::rewrite_safetensors(&tiny_weights(), replace)
}

#[test]
fn wrong_dtype_is_named() {
    let bytes = rewrite(|name, view| {
        (name == "visual.ln_pre.weight").then(|| {
            let n: usize = view.shape().iter().product();
            (
                safetensors::Dtype::I32,
                view.shape().to_vec(),
                vec![0u8; n * 4],
            )
        })
    });
    let e = Clip::from_safetensors(&tiny_config(), &bytes, &cpu()).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, Error::WeightsMismatch(_))
            && msg.contains("visual.ln_pre.weight")
            && msg.contains("I32"),
        "{msg}"
    );
}

#[test]
fn non_finite_weights_are_refused() {
    let bytes = rewrite(|name, view| {
        (name == "visual.proj").then(|| {
            let mut data = view.data().to_vec();
            data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
            (view.dtype(), view.shape().to_vec(), data)
        })
    });
    let e = Clip::from_safetensors(&tiny_config(), &bytes, &cpu()).unwrap_err();
    assert!(e.to_string().contains("non-finite"), "{e}");
}

#[test]
fn shapes_that_do_not_match_the_config_are_all_listed() {
    let mut cfg = tiny_config();
    cfg.vision.tower.width = 64;
    cfg.vision.tower.heads = 4;
    cfg.text.tower.layers = 3;
    let e = Clip::from_safetensors(&cfg, &tiny_weights(), &cpu()).unwrap_err();
    let Error::WeightsMismatch(problems) = &e else {
        panic!("{e}")
    };
    assert!(
        problems
            .iter()
            .any(|p| p.contains("visual.conv1.weight") && p.contains("[64, 3, 8, 8]")),
        "{e}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("missing tensor `transformer.resblocks.2.")),
        "{e}"
    );
    assert!(problems.len() > 10, "every problem is listed: {e}");
    // Fewer layers than the file has: the rest are unexpected.
    let mut cfg = tiny_config();
    cfg.vision.tower.layers = 3;
    let e = Clip::from_safetensors(&cfg, &tiny_weights(), &cpu()).unwrap_err();
    assert!(
        e.to_string()
            .contains("unexpected tensor `visual.transformer.resblocks.3."),
        "{e}"
    );
}

#[test]
fn configs_with_unknown_fields_or_impossible_numbers_are_refused() {
    let base = std::fs::read_to_string(fixture("tiny_quickgelu_config.json")).unwrap();
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_str(&base).unwrap();
        f(&mut v);
        ClipConfig::from_json_str(&v.to_string())
    };
    let cases: Vec<common::JsonEdit> = vec![
        (
            "unknown field",
            Box::new(|v| v["vision_cfg"]["widht"] = 48.into()),
        ),
        ("unknown field", Box::new(|v| v["colour"] = "red".into())),
        (
            "not divisible",
            Box::new(|v| v["text_cfg"]["heads"] = 3.into()),
        ),
        (
            "not divisible",
            Box::new(|v| v["vision_cfg"]["head_width"] = 20.into()),
        ),
        (
            "does not divide",
            Box::new(|v| v["vision_cfg"]["image_size"] = 36.into()),
        ),
        ("out of range", Box::new(|v| v["embed_dim"] = 0.into())),
        (
            "non-negative integer",
            Box::new(|v| v["vision_cfg"]["layers"] = (-1).into()),
        ),
        (
            "not supported",
            Box::new(|v| v["vision_cfg"]["ls_init_value"] = 0.1.into()),
        ),
        (
            "missing",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("vision_cfg");
            }),
        ),
    ];
    for (want, f) in cases {
        let e = edit(&*f).unwrap_err();
        assert!(
            matches!(e, Error::Config(_)) && e.to_string().contains(want),
            "want `{want}`, got {e}"
        );
    }
    assert!(matches!(
        ClipConfig::from_json_str("{not json").unwrap_err(),
        Error::Config(_)
    ));
    assert!(matches!(
        ClipConfig::from_json_str("[1, 2]").unwrap_err(),
        Error::Config(_)
    ));
}

#[test]
fn wrapped_and_hf_configs_parse_to_the_same_shapes() {
    let bare = tiny_config();
    let hf = ClipConfig::from_file(fixture("tiny_quickgelu_hf_config.json")).unwrap();
    assert_eq!(bare, hf);
    let wrapped = ClipConfig::from_file(fixture("small_gelu_config.json")).unwrap();
    assert_eq!(wrapped.vision.tower.heads, 2);
    assert_eq!(wrapped.vision.tower.mlp_width, 128);
    assert_eq!(wrapped.text.tower.mlp_width, 96);
}

fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend(&body);
        out.extend(crc32fast::hash(&body).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    // A few bytes of (empty) image data, so that decoders read the header as valid.
    chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(b"IEND", &[]);
    out
}

#[test]
fn bad_images_are_refused_with_reasons() {
    let is_image_err = |r: kanoclip::Result<DynamicImage>, want: &str| {
        let e = r.unwrap_err();
        assert!(
            matches!(e, Error::Image(_)) && e.to_string().contains(want),
            "want `{want}`, got {e}"
        );
    };
    is_image_err(decode_image(b""), "empty");
    is_image_err(
        decode_image(b"this is plain text, not an image"),
        "not a supported image format",
    );
    is_image_err(
        decode_image(b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
        "not a supported image format",
    );
    match decode_image(&png_header(60000, 60000)).unwrap_err() {
        Error::ImageTooLarge {
            width: 60000,
            height: 60000,
            limit: 100_000_000,
        } => {}
        e => panic!("want ImageTooLarge, got {e}"),
    }
    is_image_err(decode_image(&png_header(0, 10)), "empty (0×10)");
    let png = std::fs::read(fixture("images/tiny_quickgelu_0.png")).unwrap();
    is_image_err(decode_image(&png[..png.len() / 2]), "unexpected end");
    // A file's errors name the file and keep their variant underneath.
    let dir = std::env::temp_dir().join(format!("kanoclip-badimg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cut.png");
    std::fs::write(&path, &png[..png.len() / 2]).unwrap();
    let e = load_image(&path).unwrap_err();
    assert!(
        matches!(&e, Error::InFile { path: p, .. } if p == &path)
            && matches!(e.root(), Error::Image(_))
            && e.to_string().contains("cut.png"),
        "{e}"
    );
    std::fs::remove_dir_all(dir).ok();
}

fn encode(img: &DynamicImage) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    img.write_to(&mut buf, ImageFormat::Png).unwrap();
    buf.into_inner()
}

#[test]
fn grey_rgba_and_16_bit_images_are_converted() {
    let rgb = ImageBuffer::from_fn(40, 30, |x, y| Rgb([(x * 6) as u8, (y * 8) as u8, 100]));
    let grey = ImageBuffer::from_fn(40, 30, |x, _| Luma([(x * 6) as u8]));
    let rgba = ImageBuffer::from_fn(40, 30, |x, y| Rgba([(x * 6) as u8, (y * 8) as u8, 100, 7]));
    let wide = ImageBuffer::from_fn(40, 30, |x, y| {
        Rgb([(x * 6) as u16 * 257, (y * 8) as u16 * 257, 100 * 257])
    });
    let rgb_pre = preprocess(
        &decode_image(&encode(&DynamicImage::ImageRgb8(rgb))).unwrap(),
        16,
    )
    .unwrap();
    let rgba_pre = preprocess(
        &decode_image(&encode(&DynamicImage::ImageRgba8(rgba))).unwrap(),
        16,
    )
    .unwrap();
    let wide_pre = preprocess(
        &decode_image(&encode(&DynamicImage::ImageRgb16(wide))).unwrap(),
        16,
    )
    .unwrap();
    let grey_pre = preprocess(
        &decode_image(&encode(&DynamicImage::ImageLuma8(grey))).unwrap(),
        16,
    )
    .unwrap();
    // Alpha is dropped and 16-bit values scale down exactly: the same pixels as the RGB image.
    assert_eq!(rgba_pre.pixels, rgb_pre.pixels);
    assert_eq!(wide_pre.pixels, rgb_pre.pixels);
    // Grey becomes R = G = B before normalisation.
    let plane = 16 * 16;
    for i in 0..plane {
        let raw: Vec<f32> = (0..3)
            .map(|c| {
                grey_pre.pixels[c * plane + i] * kanoclip::clip::preprocess::CLIP_STD[c]
                    + kanoclip::clip::preprocess::CLIP_MEAN[c]
            })
            .collect();
        assert!((raw[0] - raw[1]).abs() < 1e-5 && (raw[1] - raw[2]).abs() < 1e-5);
    }
}

#[test]
fn geometry_follows_torchvision_resize_and_centre_crop() {
    // Hand-computed: 640×480 → shorter side 224 → 298×224 (int(224·640/480) = 298), crop at
    // round((298 − 224) / 2) = 37.
    let g = Geometry::new(640, 480, 224);
    assert_eq!((g.resized, g.crop), ((298, 224), (37, 0)));
    let g = Geometry::new(300, 1000, 224);
    assert_eq!((g.resized, g.crop), ((224, 746), (0, 261)));
}

#[test]
fn resizing_agrees_with_pil_bicubic_within_a_pixel_level() {
    // fast_image_resize follows Pillow's fixed-point scheme, but not to the bit: one 8-bit
    // level (1/255/0.26 ≈ 0.015 after normalisation) at most, 0.0026 on average here.
    let fixture_json = common::read_json("preprocess.json");
    let img = load_image(fixture(fixture_json["image"].as_str().unwrap())).unwrap();
    let got = preprocess(&img, fixture_json["size"].as_u64().unwrap() as u32).unwrap();
    let want = common::flatten(&fixture_json["pixels"]);
    let mean: f32 = common::zip_eq(&got.pixels, &want)
        .map(|(a, b)| common::abs_err(*a, *b))
        .sum::<f32>()
        / want.len() as f32;
    let max = common::max_abs_diff(&got.pixels, &want);
    assert!(mean < 0.005 && max < 0.016, "mean {mean}, max {max}");
}

/// Thin strips and 1-px lines: the model input is made from a window around the crop, so
/// memory follows the input size, never the image's long side; the result matches the
/// whole-image resize (torchvision's way) closely, and maps come back at the image's size.
#[test]
fn extreme_aspect_ratios_preprocess_in_bounded_memory() {
    // A smooth wide image small enough to resize whole, for the reference.
    let (w, h, size) = (3000u32, 60u32, 32u32);
    let img = ImageBuffer::from_fn(w, h, |x, y| {
        let v = |k: f32| ((x as f32 / 97.0 + y as f32 / 13.0 + k).sin() * 100.0 + 128.0) as u8;
        Rgb([v(0.0), v(1.0), v(2.0)])
    });
    let g = Geometry::new(w, h, size);
    assert_eq!((g.resized, g.crop), ((1600, 32), (784, 0)));
    let whole = image::imageops::resize(&img, 1600, 32, image::imageops::FilterType::CatmullRom);
    let got = preprocess(&DynamicImage::ImageRgb8(img.clone()), size).unwrap();
    let s = size as usize;
    let mut worst = 0.0f32;
    for y in 0..s {
        for x in 0..s {
            let p = whole.get_pixel(784 + x as u32, y as u32);
            let want = (f32::from(p[0]) / 255.0 - kanoclip::clip::preprocess::CLIP_MEAN[0])
                / kanoclip::clip::preprocess::CLIP_STD[0];
            worst = worst.max(common::abs_err(got.pixels[y * s + x], want));
        }
    }
    // A sub-pixel shift of a smooth image: under 4 grey levels (in normalised units).
    assert!(
        worst < 4.0 / 255.0 / 0.268,
        "window resize differs by {worst}"
    );

    // 1 px high and 1 px wide, up to what the pixel limit allows in a test's time.
    for (w, h) in [(2_000_000u32, 1u32), (1, 300_000), (7, 1), (1, 1)] {
        let img = DynamicImage::ImageRgb8(ImageBuffer::from_fn(w, h, |x, y| {
            Rgb([(x % 251) as u8, (y % 241) as u8, 7])
        }));
        let p = preprocess(&img, 224).unwrap();
        assert_eq!(p.pixels.len(), 3 * 224 * 224);
        assert!(p.pixels.iter().all(|v| v.is_finite()));
        assert_eq!(p.geometry.original, (w, h));
        let map = vec![0.5f32; 224 * 224];
        let back = kanoclip::detect::maps::to_original(&map, &p.geometry);
        assert_eq!(back.len(), w as usize * h as usize);
        assert!(back.iter().all(|v| (0.0..=0.5).contains(v)));
    }
    // The resized long side of a 100-megapixel line passes u32::MAX: no wrap-around.
    let g = Geometry::new(100_000_000, 1, 224);
    assert_eq!(g.resized, (22_400_000_000, 224));
    assert_eq!(g.crop, (11_199_999_888, 0));
}

fn encoded(format: ImageFormat) -> Vec<u8> {
    let img = ImageBuffer::from_fn(48, 40, |x, y| Rgb([(x * 5) as u8, (y * 6) as u8, 77]));
    let mut buf = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img)
        .write_to(&mut buf, format)
        .unwrap();
    buf.into_inner()
}

/// Every cut of a JPEG, PNG, WebP or BMP is refused: by the decoder, or as truncated when
/// the decoder would fill the rest in. Whole files with trailing bytes still decode.
#[test]
fn truncated_images_are_refused_at_every_cut() {
    for format in [
        ImageFormat::Jpeg,
        ImageFormat::Png,
        ImageFormat::WebP,
        ImageFormat::Bmp,
    ] {
        let bytes = encoded(format);
        let n = bytes.len();
        let mut truncated = 0;
        for cut in [n / 8, n / 4, n / 2, 3 * n / 4, n - 12, n - 4, n - 2, n - 1] {
            match decode_image(&bytes[..cut]) {
                Err(Error::TruncatedImage(why)) => {
                    truncated += 1;
                    assert!(!why.is_empty());
                    // --allow-truncated decodes it, saying why.
                    let (img, why2) = decode_image_lenient(&bytes[..cut]).unwrap();
                    assert_eq!(
                        (img.width(), img.height(), why2),
                        (48, 40, Some(why.as_str()))
                    );
                }
                Err(Error::Image(_)) => {}
                Err(e) => panic!("{format:?} cut at {cut}/{n}: unexpected {e}"),
                Ok(_) => panic!("{format:?} cut at {cut}/{n} decoded as whole"),
            }
        }
        if matches!(format, ImageFormat::Jpeg | ImageFormat::Png) {
            assert!(
                truncated > 0,
                "{format:?}: some cut is decodable and must be flagged"
            );
        }
        let mut trailing = bytes.clone();
        trailing.extend_from_slice(b"trailing camera data");
        assert!(
            decode_image(&trailing).is_ok(),
            "{format:?} with trailing bytes"
        );
    }
}

/// Detector settings that make nonsense are refused with their reason.
#[test]
fn nonsense_detector_settings_are_refused() {
    use kanoclip::detect::DetectorConfig;
    let base = DetectorConfig::for_clip(&tiny_config());
    let layers = tiny_config().vision.tower.layers;
    let patch = tiny_config().vision.patch_size;
    type Edit = Box<dyn Fn(&mut DetectorConfig)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("sigma", Box::new(|c| c.sigma = 1e9)),
        ("sigma", Box::new(|c| c.sigma = f64::NAN)),
        ("sigma", Box::new(|c| c.sigma = -1.0)),
        ("tau", Box::new(|c| c.tau = 0.0)),
        ("tau", Box::new(|c| c.tau = f64::INFINITY)),
        ("distinct", Box::new(|c| c.taps = vec![1, 1])),
        ("taps", Box::new(|c| c.taps = vec![])),
        ("global_weight", Box::new(|c| c.global_weight = f64::NAN)),
        ("threshold", Box::new(|c| c.threshold = f64::NAN)),
        ("input size", Box::new(|c| c.input_size = 0)),
        ("vv_from", Box::new(|c| c.vv_from = 0)),
    ];
    assert!(base.validate(layers, patch).is_ok());
    for (want, edit) in cases {
        let mut c = base.clone();
        edit(&mut c);
        match c.validate(layers, patch) {
            Err(Error::Invalid(m)) => assert!(m.contains(want), "want `{want}` in {m}"),
            other => panic!("want Invalid({want}), got {other:?}"),
        }
    }
}

/// A config that describes a model too large to hold, or far larger than the weights file,
/// is refused before any tensor is made (no allocation sized by the config).
#[test]
fn configs_larger_than_the_budget_or_the_file_are_refused_first() {
    let mut huge = tiny_config();
    huge.vision.tower.layers = 60_000;
    huge.vision.tower.width = 4096;
    huge.vision.tower.heads = 64;
    huge.vision.tower.mlp_width = 16384;
    match huge.validate() {
        Err(Error::Config(m)) => assert!(m.contains("parameters"), "{m}"),
        other => panic!("want Config, got {other:?}"),
    }
    // ViT-L-sized (300 M parameters, 1.2 GB as f32): within the budget, but not this file.
    let mut wide = tiny_config();
    wide.vision.tower.width = 1024;
    wide.vision.tower.heads = 16;
    wide.vision.tower.mlp_width = 4096;
    wide.vision.tower.layers = 24;
    wide.validate().unwrap();
    match Clip::from_safetensors(&wide, &tiny_weights(), &cpu()).unwrap_err() {
        Error::WeightsMismatch(p) => {
            assert!(
                p.len() == 1 && p[0].contains("not for the same model"),
                "{p:?}"
            )
        }
        e => panic!("want WeightsMismatch, got {e}"),
    }
}

// ---------------------------------------------------------------------------------------
// The catalogue: every class of bad input, each case pinned to its error kind
// (`Error::kind`) and a piece of its reason. README.md's "Bad inputs" table is generated
// from it (`KANOCLIP_BLESS=1 cargo test --release --test bad_input catalogue`) and checked
// against it, so the documentation cannot drift from what the code does.

type Case = (&'static str, &'static str, &'static str, &'static str, Run);
type Run = Box<dyn Fn() -> kanoclip::Result<()>>;

fn drop_ok<T>(r: kanoclip::Result<T>) -> kanoclip::Result<()> {
    r.map(drop)
}

fn tiny_detector() -> kanoclip::detect::Detector {
    common::tiny_detector(&cpu())
}

/// The tiny model's bundle as `kanoclip convert --to web` writes it (made once): its
/// folder and its manifest.
fn tiny_bundle() -> &'static (PathBuf, serde_json::Value) {
    static BUNDLE: std::sync::OnceLock<(PathBuf, serde_json::Value)> = std::sync::OnceLock::new();
    BUNDLE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kanoclip-bundle-{}", std::process::id()));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kanoclip"))
            .args(["convert", "--to", "web", "--clip-config"])
            .arg(fixture("tiny_quickgelu_config.json"))
            .arg("--weights")
            .arg(fixture("tiny_quickgelu.safetensors"))
            .args(["--name", "tiny", "--out"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let m = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        (dir, m)
    })
}

use std::path::PathBuf;

/// A manifest edited by `f`, parsed (and checked).
fn manifest_case(f: impl Fn(&mut serde_json::Value) + 'static) -> Run {
    Box::new(move || {
        let mut m = tiny_bundle().1.clone();
        f(&mut m);
        drop_ok(kanoclip::detect::bundle::Manifest::from_json_str(
            &m.to_string(),
        ))
    })
}

/// A copy of the bundle whose first chunk is edited by `f`, read natively.
fn chunk_case(f: impl Fn(&mut Vec<u8>) + 'static) -> Run {
    Box::new(move || {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let (pristine, m) = tiny_bundle();
        let dir = pristine.with_extension(N.fetch_add(1, Ordering::SeqCst).to_string());
        std::fs::create_dir_all(&dir).unwrap();
        for name in [
            "manifest.json",
            m["files"][0]["chunks"][0]["path"].as_str().unwrap(),
        ] {
            std::fs::copy(pristine.join(name), dir.join(name)).unwrap();
        }
        let chunk = dir.join(m["files"][0]["chunks"][0]["path"].as_str().unwrap());
        let mut bytes = std::fs::read(&chunk).unwrap();
        f(&mut bytes);
        std::fs::write(&chunk, &bytes).unwrap();
        let r = kanoclip::detect::bundle::Manifest::read(&dir.join("manifest.json"));
        std::fs::remove_dir_all(dir).ok();
        drop_ok(r)
    })
}

fn config_case(f: impl Fn(&mut serde_json::Value) + 'static) -> Run {
    Box::new(move || {
        let text = std::fs::read_to_string(fixture("tiny_quickgelu_config.json")).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        f(&mut v);
        drop_ok(ClipConfig::from_json_str(&v.to_string()))
    })
}

/// Detector settings edited by `f`, checked as a detector checks them: each value, then
/// what one image would cost on the tiny tower (patch 8, 3 heads).
fn settings_case(f: impl Fn(&mut kanoclip::detect::DetectorConfig) + 'static) -> Run {
    Box::new(move || {
        let mut c = kanoclip::detect::DetectorConfig::for_clip(&tiny_config());
        f(&mut c);
        let v = tiny_config().vision;
        c.validate(v.tower.layers, v.patch_size)?;
        c.check_cost(v.patch_size, v.tower.heads)
    })
}

/// A memory file of the tiny detector (two references), with its metadata edited by `f`.
fn memory_case(f: impl Fn(&mut serde_json::Value) + 'static) -> Run {
    Box::new(move || {
        use kanoclip::detect::memory::ReferenceMemory;
        static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let bytes = BYTES.get_or_init(|| common::tiny_memory_bytes(&tiny_detector()));
        let edited = edit_meta(bytes, "memory", |t| json_edit(t, &f));
        drop_ok(ReferenceMemory::from_bytes(&edited, &cpu()))
    })
}

fn image_case(bytes: impl Fn() -> Vec<u8> + 'static) -> Run {
    Box::new(move || drop_ok(decode_image(&bytes())))
}

fn weights_case(f: impl Fn(&mut Vec<u8>) + 'static) -> Run {
    Box::new(move || {
        let mut bytes = tiny_weights();
        f(&mut bytes);
        drop_ok(Clip::from_safetensors(&tiny_config(), &bytes, &cpu()))
    })
}

fn head_case(f: impl Fn(&mut Vec<u8>) + 'static) -> Run {
    Box::new(move || {
        let clip = Clip::from_safetensors(&tiny_config(), &tiny_weights(), &cpu())?;
        let backbone = kanoclip::head::BackboneId::of(&clip);
        let mut bytes = std::fs::read(fixture("tiny_quickgelu_head.safetensors")).unwrap();
        f(&mut bytes);
        drop_ok(kanoclip::detect::head_file::load_head(
            &bytes,
            &backbone,
            77,
            &cpu(),
        ))
    })
}

/// A safetensors file with its metadata entry `key` replaced by `f(old)`.
fn edit_meta(bytes: &[u8], key: &str, f: impl Fn(&str) -> String) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let old = header["__metadata__"][key].as_str().unwrap().to_string();
    header["__metadata__"][key] = f(&old).into();
    let mut text = header.to_string();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text.as_bytes());
    out.extend(&bytes[8 + n..]);
    out
}

fn json_edit(text: &str, f: impl Fn(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
    f(&mut v);
    v.to_string()
}

fn knowledge_case(f: impl Fn(&mut serde_json::Value) + 'static) -> Run {
    Box::new(move || {
        let text = std::fs::read_to_string(fixture("knowledge_small.json")).unwrap();
        drop_ok(kanoclip::head::knowledge::KnowledgeBase::from_json_str(
            &json_edit(&text, &f),
        ))
    })
}

fn rgba_case(width: u32, height: u32, len: usize) -> Run {
    Box::new(move || {
        drop_ok(kanoclip::clip::preprocess::rgba_image(
            width,
            height,
            vec![0; len],
        ))
    })
}

fn catalogue() -> Vec<Case> {
    let png = || std::fs::read(fixture("images/tiny_quickgelu_0.png")).unwrap();
    let jpeg = || encoded(ImageFormat::Jpeg);
    let cut = |b: Vec<u8>, keep: usize| b[..keep.min(b.len())].to_vec();
    let sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let path = |p: &'static str| {
        move |m: &mut serde_json::Value| m["files"][0]["chunks"][0]["path"] = p.into()
    };
    vec![
        // Images.
        (
            "image-empty",
            "a 0-byte image file",
            "image",
            "empty",
            image_case(Vec::new),
        ),
        (
            "image-text",
            "a text file named .png",
            "image",
            "not a supported image format",
            image_case(|| b"plain text".to_vec()),
        ),
        (
            "image-svg",
            "an SVG drawing",
            "image",
            "not a supported image format",
            image_case(|| b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec()),
        ),
        (
            "image-huge-header",
            "a 75-byte PNG claiming 60000x60000",
            "image-too-large",
            "over the limit",
            image_case(|| png_header(60000, 60000)),
        ),
        (
            "image-tall-header",
            "a PNG claiming 1x100000001 (a 1-px line)",
            "image-too-large",
            "over the limit",
            image_case(|| png_header(1, 100_000_001)),
        ),
        (
            "image-zero-width",
            "a PNG claiming 0x10",
            "image",
            "empty (0×10)",
            image_case(|| png_header(0, 10)),
        ),
        (
            "image-png-half",
            "a PNG cut in half",
            "image",
            "unexpected end",
            image_case(move || {
                let b = png();
                cut(b.clone(), b.len() / 2)
            }),
        ),
        (
            "image-png-no-iend",
            "a PNG without its last 12 bytes",
            "image",
            "unexpected end",
            image_case(move || {
                let b = png();
                cut(b.clone(), b.len() - 12)
            }),
        ),
        (
            "image-jpeg-no-eoi",
            "a JPEG without its end-of-image marker",
            "truncated-image",
            "end-of-image",
            image_case(move || {
                let b = jpeg();
                cut(b.clone(), b.len() - 2)
            }),
        ),
        (
            "image-jpeg-header-only",
            "the first 300 bytes of a JPEG",
            "image",
            "unreadable header",
            image_case(move || cut(jpeg(), 300)),
        ),
        (
            "image-webp-cut",
            "a WebP cut at three quarters",
            "image",
            "cannot decode",
            image_case(|| {
                let b = encoded(ImageFormat::WebP);
                b[..b.len() * 3 / 4].to_vec()
            }),
        ),
        (
            "image-rgba-short",
            "RGBA pixels shorter than width x height x 4",
            "invalid",
            "RGBA",
            rgba_case(10, 10, 399),
        ),
        (
            "image-rgba-zero",
            "RGBA pixels of a 0x10 image",
            "invalid",
            "0×10 pixels",
            rgba_case(0, 10, 0),
        ),
        (
            "image-rgba-huge",
            "RGBA claiming 100000x100000",
            "image-too-large",
            "over the limit",
            rgba_case(100_000, 100_000, 16),
        ),
        (
            "detector-threshold-nan",
            "set_threshold(NaN) (`--threshold NaN`)",
            "invalid",
            "finite",
            Box::new(|| tiny_detector().set_threshold(f64::NAN)),
        ),
        // Weights.
        (
            "weights-empty",
            "a 0-byte weights file",
            "weights-format",
            "header too small",
            weights_case(|b| b.clear()),
        ),
        (
            "weights-cut-header",
            "weights cut inside the header length",
            "weights-format",
            "header too small",
            weights_case(|b| b.truncate(7)),
        ),
        (
            "weights-cut-data",
            "weights cut in the tensor data",
            "weights-format",
            "not fully covered",
            weights_case(|b| {
                let n = b.len() / 2;
                b.truncate(n)
            }),
        ),
        (
            "weights-header-huge",
            "a header length of 2^60",
            "weights-format",
            "header too large",
            weights_case(|b| b[..8].copy_from_slice(&(1u64 << 60).to_le_bytes())),
        ),
        (
            "weights-png",
            "a PNG given as weights",
            "weights-format",
            "not a readable safetensors file",
            Box::new(move || drop_ok(Clip::from_safetensors(&tiny_config(), &png(), &cpu()))),
        ),
        (
            "weights-dtype",
            "a tensor stored as I32",
            "weights-mismatch",
            "I32",
            Box::new(|| {
                drop_ok(Clip::from_safetensors(
                    &tiny_config(),
                    &rewrite(|n, v| {
                        (n == "visual.ln_pre.weight").then(|| {
                            let k: usize = v.shape().iter().product();
                            (
                                safetensors::Dtype::I32,
                                v.shape().to_vec(),
                                vec![0u8; k * 4],
                            )
                        })
                    }),
                    &cpu(),
                ))
            }),
        ),
        (
            "weights-int8-no-scale",
            "an int8 tensor without its `.scale`",
            "weights-mismatch",
            "has no",
            Box::new(|| {
                drop_ok(Clip::from_safetensors(
                    &tiny_config(),
                    &rewrite(|n, v| {
                        (n == "visual.transformer.resblocks.0.mlp.c_fc.weight").then(|| {
                            let k: usize = v.shape().iter().product();
                            (safetensors::Dtype::I8, v.shape().to_vec(), vec![1u8; k])
                        })
                    }),
                    &cpu(),
                ))
            }),
        ),
        (
            "weights-nan",
            "a NaN in visual.proj",
            "weights-mismatch",
            "non-finite",
            Box::new(|| {
                drop_ok(Clip::from_safetensors(
                    &tiny_config(),
                    &rewrite(|n, v| {
                        (n == "visual.proj").then(|| {
                            let mut d = v.data().to_vec();
                            d[..4].copy_from_slice(&f32::NAN.to_le_bytes());
                            (v.dtype(), v.shape().to_vec(), d)
                        })
                    }),
                    &cpu(),
                ))
            }),
        ),
        (
            "weights-shape",
            "a config wider than the weights",
            "weights-mismatch",
            "visual.conv1.weight",
            Box::new(|| {
                let mut c = tiny_config();
                c.vision.tower.width = 64;
                c.vision.tower.heads = 4;
                drop_ok(Clip::from_safetensors(&c, &tiny_weights(), &cpu()))
            }),
        ),
        (
            "weights-missing-layer",
            "a config with a layer more than the weights",
            "weights-mismatch",
            "missing tensor",
            Box::new(|| {
                let mut c = tiny_config();
                c.text.tower.layers += 1;
                drop_ok(Clip::from_safetensors(&c, &tiny_weights(), &cpu()))
            }),
        ),
        (
            "weights-extra-layer",
            "a config with a layer less than the weights",
            "weights-mismatch",
            "unexpected tensor",
            Box::new(|| {
                let mut c = tiny_config();
                c.vision.tower.layers -= 1;
                drop_ok(Clip::from_safetensors(&c, &tiny_weights(), &cpu()))
            }),
        ),
        (
            "weights-other-model",
            "a ViT-L-sized config on tiny weights",
            "weights-mismatch",
            "not for the same model",
            Box::new(|| {
                let mut c = tiny_config();
                c.vision.tower.width = 1024;
                c.vision.tower.heads = 16;
                c.vision.tower.mlp_width = 4096;
                c.vision.tower.layers = 24;
                drop_ok(Clip::from_safetensors(&c, &tiny_weights(), &cpu()))
            }),
        ),
        // Configs.
        (
            "config-not-json",
            "`{not json`",
            "config",
            "not JSON",
            Box::new(|| drop_ok(ClipConfig::from_json_str("{not json"))),
        ),
        (
            "config-array",
            "a JSON array",
            "config",
            "expected a JSON object",
            Box::new(|| drop_ok(ClipConfig::from_json_str("[1]"))),
        ),
        (
            "config-unknown-field",
            "a misspelt field (`widht`)",
            "config",
            "unknown field",
            config_case(|v| v["vision_cfg"]["widht"] = 48.into()),
        ),
        (
            "config-heads",
            "3 heads for a width of 32",
            "config",
            "not divisible",
            config_case(|v| v["text_cfg"]["heads"] = 3.into()),
        ),
        (
            "config-image-size",
            "image_size 36 with patch 8",
            "config",
            "does not divide",
            config_case(|v| v["vision_cfg"]["image_size"] = 36.into()),
        ),
        (
            "config-embed-zero",
            "embed_dim 0",
            "config",
            "out of range",
            config_case(|v| v["embed_dim"] = 0.into()),
        ),
        (
            "config-negative",
            "layers -1",
            "config",
            "non-negative integer",
            config_case(|v| v["vision_cfg"]["layers"] = (-1).into()),
        ),
        (
            "config-context-zero",
            "context_length 0",
            "config",
            "context length",
            config_case(|v| v["text_cfg"]["context_length"] = 0.into()),
        ),
        (
            "config-unsupported",
            "layer scale (ls_init_value)",
            "config",
            "not supported",
            config_case(|v| v["vision_cfg"]["ls_init_value"] = 0.1.into()),
        ),
        (
            "config-missing",
            "no vision_cfg",
            "config",
            "missing",
            config_case(|v| {
                v.as_object_mut().unwrap().remove("vision_cfg");
            }),
        ),
        (
            "config-over-budget",
            "60000 layers of width 4096",
            "config",
            "parameters",
            config_case(|v| {
                v["vision_cfg"]["layers"] = 60000.into();
                v["vision_cfg"]["width"] = 4096.into();
            }),
        ),
        // Detector settings (CLI flags, head files and manifests share these checks).
        (
            "settings-sigma-huge",
            "sigma 1e9",
            "invalid",
            "sigma",
            settings_case(|c| c.sigma = 1e9),
        ),
        (
            "settings-sigma-nan",
            "sigma NaN",
            "invalid",
            "sigma",
            settings_case(|c| c.sigma = f64::NAN),
        ),
        (
            "settings-tau-zero",
            "tau 0",
            "invalid",
            "tau",
            settings_case(|c| c.tau = 0.0),
        ),
        (
            "settings-taps-repeat",
            "taps [1, 1]",
            "invalid",
            "distinct",
            settings_case(|c| c.taps = vec![1, 1]),
        ),
        (
            "settings-taps-empty",
            "no taps",
            "invalid",
            "taps",
            settings_case(|c| c.taps = vec![]),
        ),
        (
            "settings-global-nan",
            "global weight NaN",
            "invalid",
            "global_weight",
            settings_case(|c| c.global_weight = f64::NAN),
        ),
        (
            "settings-threshold-nan",
            "threshold NaN",
            "invalid",
            "threshold",
            settings_case(|c| c.threshold = f64::NAN),
        ),
        (
            "settings-input-zero",
            "input size 0",
            "invalid",
            "input size",
            settings_case(|c| c.input_size = 0),
        ),
        // Head files.
        (
            "head-empty",
            "a 0-byte head file",
            "head",
            "header too small",
            head_case(|b| b.clear()),
        ),
        (
            "head-cut",
            "a head file cut in half",
            "head",
            "not fully covered",
            head_case(|b| {
                let n = b.len() / 2;
                b.truncate(n)
            }),
        ),
        (
            "head-other-backbone",
            "a head for another backbone",
            "incompatible",
            "another backbone",
            head_case(|b| {
                *b = edit_meta(b, "backbone", |t| {
                    json_edit(t, |v| v["embed_dim"] = 999.into())
                })
            }),
        ),
        (
            "head-n-ctx",
            "a head claiming n_ctx 1000000",
            "head",
            "n_ctx",
            head_case(|b| {
                *b = edit_meta(b, "head", |t| {
                    json_edit(t, |v| v["n_ctx"] = 1_000_000.into())
                })
            }),
        ),
        (
            "head-n-ctx-wraps",
            "a head claiming n_ctx 2^64 - 4 (n_ctx + 8 wrapped)",
            "head",
            "n_ctx",
            head_case(|b| {
                *b = edit_meta(b, "head", |t| {
                    json_edit(t, |v| v["n_ctx"] = (u64::MAX - 3).into())
                })
            }),
        ),
        (
            "head-deep-len-huge",
            "a head claiming deep_len 2^63",
            "head",
            "deep_len",
            head_case(|b| {
                *b = edit_meta(b, "head", |t| {
                    json_edit(t, |v| v["deep_len"] = (1u64 << 63).into())
                })
            }),
        ),
        (
            "head-levels",
            "a head claiming 0 levels",
            "head",
            "levels",
            head_case(|b| *b = edit_meta(b, "head", |t| json_edit(t, |v| v["levels"] = 0.into()))),
        ),
        // Knowledge bases.
        (
            "knowledge-not-json",
            "a knowledge file that is not JSON",
            "knowledge",
            "malformed",
            Box::new(|| drop_ok(kanoclip::head::knowledge::KnowledgeBase::from_json_str("["))),
        ),
        (
            "knowledge-format",
            "another format version",
            "knowledge",
            "format",
            knowledge_case(|v| v["format"] = "kanoclip-knowledge/99".into()),
        ),
        (
            "knowledge-empty-state",
            "no normal texts",
            "knowledge",
            "normal",
            knowledge_case(|v| v["normal"] = serde_json::json!([])),
        ),
        // Bundles (manifest and chunks); the browser test replays the same in Chromium.
        (
            "manifest-html",
            "a captive portal's HTML page",
            "config",
            "HTML page",
            Box::new(|| {
                drop_ok(kanoclip::detect::bundle::Manifest::from_json_str(
                    "<!doctype html><title>Log in to Wi-Fi</title>",
                ))
            }),
        ),
        (
            "manifest-format",
            "format kanoclip-web/9",
            "incompatible",
            "kanoclip-web/1",
            manifest_case(|m| m["format"] = "kanoclip-web/9".into()),
        ),
        (
            "manifest-int8-format-1",
            "an int8 bundle under format kanoclip-web/1",
            "config",
            "kanoclip-web/2",
            manifest_case(|m| {
                m["dtype"] = "int8".into();
                m["quantization"] = kanoclip::detect::bundle::INT8_SCHEME.into();
            }),
        ),
        (
            "manifest-quantization",
            "an int8 scheme this version does not read",
            "incompatible",
            "quantization",
            manifest_case(|m| {
                m["format"] = "kanoclip-web/2".into();
                m["dtype"] = "int8".into();
                m["quantization"] = "int4-groupwise".into();
            }),
        ),
        (
            "manifest-absolute-url",
            "a chunk at https://evil.example/x",
            "config",
            "not a plain file name",
            manifest_case(path("https://evil.example/x")),
        ),
        (
            "manifest-other-host",
            "a chunk at //evil.example/x",
            "config",
            "not a plain file name",
            manifest_case(path("//evil.example/x")),
        ),
        (
            "manifest-dotdot",
            "a chunk at ../secret.bin",
            "config",
            "not a plain file name",
            manifest_case(path("../secret.bin")),
        ),
        (
            "manifest-subfolder",
            "a chunk at a/b.bin",
            "config",
            "not a plain file name",
            manifest_case(path("a/b.bin")),
        ),
        (
            "manifest-encoded",
            "a chunk at %2e%2e%2fx",
            "config",
            "not a plain file name",
            manifest_case(path("%2e%2e%2fx")),
        ),
        (
            "manifest-not-content-named",
            "a chunk named vision.000",
            "config",
            "named by its content",
            manifest_case(path("vision.000")),
        ),
        (
            "manifest-bad-sha",
            "a chunk sha256 that is not hex",
            "config",
            "not a SHA-256",
            manifest_case(|m| m["files"][0]["chunks"][0]["sha256"] = "xyz".into()),
        ),
        (
            "manifest-huge-file",
            "a vision file claiming 10^15 bytes",
            "config",
            "claims",
            manifest_case(|m| m["files"][0]["size"] = 1_000_000_000_000_000u64.into()),
        ),
        (
            "manifest-huge-chunk",
            "a chunk claiming 4 GB",
            "config",
            "claims",
            manifest_case(|m| m["files"][0]["chunks"][0]["size"] = 4_000_000_000u64.into()),
        ),
        (
            "manifest-many-chunks",
            "100000 chunks for a small file",
            "config",
            "chunks",
            manifest_case(move |m| {
                let c = serde_json::json!({"path": format!("vision-{}.bin", &sha[..16]), "size": 1, "sha256": sha});
                m["files"][0]["chunks"] = serde_json::Value::Array(vec![c; 100_000]);
            }),
        ),
        (
            "manifest-sizes-disagree",
            "chunk sizes that do not add up",
            "config",
            "add up",
            manifest_case(|m| {
                let s = m["files"][0]["size"].as_u64().unwrap();
                m["files"][0]["size"] = (s - 1).into()
            }),
        ),
        (
            "manifest-unknown-file",
            "a file named `extra`",
            "config",
            "unknown bundle file",
            manifest_case(|m| m["files"][0]["name"] = "extra".into()),
        ),
        (
            "manifest-text-rows",
            "one text feature row",
            "config",
            "text_features",
            manifest_case(|m| {
                m["text_features"].as_array_mut().unwrap().pop();
            }),
        ),
        (
            "chunk-tampered",
            "one byte of a chunk changed",
            "integrity",
            "SHA-256",
            chunk_case(|b| b[100] ^= 1),
        ),
        (
            "chunk-truncated",
            "a chunk cut short",
            "integrity",
            "the manifest says",
            chunk_case(|b| b.truncate(1000)),
        ),
        (
            "chunk-html",
            "an HTML page in place of a chunk",
            "integrity",
            "the manifest says",
            chunk_case(|b| *b = b"<html>captive portal</html>".to_vec()),
        ),
        // Reference memories (few-shot).
        (
            "memory-not-safetensors",
            "a memory file that is text",
            "weights-format",
            "memory",
            Box::new(|| {
                drop_ok(kanoclip::detect::memory::ReferenceMemory::from_bytes(
                    b"hello",
                    &cpu(),
                ))
            }),
        ),
        (
            "memory-embed-zero",
            "a memory whose backbone claims embed_dim 0",
            "invalid",
            "embed_dim 0 is out of range",
            memory_case(|v| v["backbone"]["embed_dim"] = 0.into()),
        ),
        (
            "memory-embed-huge",
            "a memory whose backbone claims embed_dim 2^40",
            "invalid",
            "embed_dim",
            memory_case(|v| v["backbone"]["embed_dim"] = (1u64 << 40).into()),
        ),
        (
            "memory-patch-zero",
            "a memory whose backbone claims patch_size 0",
            "invalid",
            "patch_size 0",
            memory_case(|v| v["backbone"]["patch_size"] = 0.into()),
        ),
        (
            "memory-input-huge",
            "a memory at input size 2^40",
            "invalid",
            "input size",
            memory_case(|v| v["input_size"] = (1u64 << 40).into()),
        ),
        (
            "memory-rows-huge",
            "a memory claiming 2^62 tokens per tap",
            "invalid",
            "tokens per tap",
            memory_case(|v| v["rows"][0] = (1u64 << 62).into()),
        ),
        (
            "memory-rows-short",
            "a memory claiming fewer tokens than its tensors hold",
            "weights-mismatch",
            "tap.0",
            memory_case(|v| v["rows"][0] = 1.into()),
        ),
        (
            "memory-scale-zero",
            "a memory with scale 0",
            "invalid",
            "scale",
            memory_case(|v| v["scale"] = 0.0.into()),
        ),
        (
            "memory-no-images",
            "a memory naming no reference images",
            "invalid",
            "reference images",
            memory_case(|v| v["images"] = serde_json::json!([])),
        ),
        // What a detect costs, checked before anything is allocated.
        (
            "settings-attention-too-large",
            "input size 4096 on a patch-8 tower (262145 tokens)",
            "invalid",
            "attention scores",
            settings_case(|c| c.input_size = 4096),
        ),
        (
            "settings-blur-too-costly",
            "sigma 800 at input size 800 (10^10 multiply-adds)",
            "invalid",
            "choose a smaller sigma",
            settings_case(|c| {
                c.input_size = 800;
                c.sigma = 800.0;
            }),
        ),
        (
            "manifest-backbone-disagrees",
            "a backbone block that does not describe the clip config",
            "config",
            "does not describe",
            manifest_case(|m| m["backbone"]["embed_dim"] = 999.into()),
        ),
        (
            "manifest-settings-too-large",
            "detector settings whose attention needs 800 GB",
            "invalid",
            "attention scores",
            manifest_case(|m| m["detector"]["input_size"] = 4096.into()),
        ),
        (
            "convert-threshold-nan",
            "a bundle built with threshold NaN (`convert --threshold nan`)",
            "invalid",
            "not a finite number",
            Box::new(|| {
                use kanoclip::detect::bundle::{BundleInfo, StoreDtype, build};
                let info = BundleInfo {
                    threshold: Some(f64::NAN),
                    ..Default::default()
                };
                let weights = tiny_weights();
                let made = build(
                    &tiny_detector(),
                    &tiny_config(),
                    &weights,
                    None,
                    StoreDtype::F16,
                    &info,
                );
                drop_ok(made)
            }),
        ),
        (
            "detect-nan-output",
            "a detector whose state texts are NaN",
            "non-finite",
            "NaN or infinite score",
            Box::new(|| {
                use burn::tensor::{Tensor, TensorData};
                use kanoclip::detect::{Detector, DetectorConfig};
                let clip = Clip::from_safetensors(&tiny_config(), &tiny_weights(), &cpu())?;
                let backbone = kanoclip::head::BackboneId::of(&clip);
                let config = DetectorConfig::for_clip(&clip.config);
                let nan = TensorData::new(vec![f32::NAN; 64], [2, 32]);
                let text = Tensor::<2>::from_data(nan, &cpu());
                let det = Detector::from_parts(clip.vision, backbone, None, config, text)?;
                let img = image::open(fixture("images/tiny_quickgelu_0.png")).unwrap();
                drop_ok(det.detect(&img))
            }),
        ),
        (
            "llm-key-over-http",
            "an API key for http://api.example.com (not this machine)",
            "invalid",
            "unencrypted",
            Box::new(|| {
                use kanoclip::knowledge::llm::{ChatClient, ChatOptions};
                drop_ok(ChatClient::new(ChatOptions {
                    endpoint: "http://api.example.com/v1".into(),
                    model: "m".into(),
                    api_key: Some("sk-secret".into()),
                    timeout: 30.0,
                    retries: 3,
                    rate: 1.0,
                    backoff: std::time::Duration::from_millis(500),
                }))
            }),
        ),
        // Checkpoints.
        (
            "checkpoint-foreign",
            "a head file given as a checkpoint",
            "invalid",
            "not a kanoclip checkpoint",
            Box::new(|| {
                drop_ok(kanoclip::train::checkpoint::Checkpoint::from_bytes(
                    &std::fs::read(fixture("tiny_quickgelu_head.safetensors")).unwrap(),
                ))
            }),
        ),
        (
            "checkpoint-cut",
            "a checkpoint cut short",
            "invalid",
            "not a kanoclip checkpoint",
            Box::new(|| {
                drop_ok(kanoclip::train::checkpoint::Checkpoint::from_bytes(
                    b"\x10\0\0\0\0\0\0\0{}",
                ))
            }),
        ),
    ]
}

#[test]
fn catalogue_of_bad_inputs() {
    let cases = catalogue();
    let mut ids = std::collections::HashSet::new();
    let mut failures = Vec::new();
    for (id, _, kind, reason, run) in &cases {
        assert!(ids.insert(*id), "duplicate case {id}");
        match run() {
            Ok(()) => failures.push(format!("{id}: accepted")),
            Err(e) => {
                let msg = e.to_string();
                if std::env::var_os("KANOCLIP_SHOW").is_some() {
                    println!("{id}: {} {msg}", e.kind());
                }
                if e.kind() != *kind || !msg.contains(reason) {
                    failures.push(format!(
                        "{id}: want {kind} `{reason}`, got {} `{msg}`",
                        e.kind()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(cases.len() >= 60, "{} cases", cases.len());
    // The README's table is this catalogue.
    let mut table =
        String::from("| case | input | error kind | reason contains |\n|---|---|---|---|\n");
    for (id, input, kind, reason, _) in &cases {
        let reason = if reason.is_empty() {
            "(any)".to_string()
        } else {
            format!("`{reason}`")
        };
        table.push_str(&format!("| {id} | {input} | `{kind}` | {reason} |\n"));
    }
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let (start, end) = ("<!-- catalogue:start -->\n", "<!-- catalogue:end -->");
    let (a, b) = (
        readme.find(start).expect("README has no catalogue markers"),
        readme.find(end).unwrap(),
    );
    let current = &readme[a + start.len()..b];
    if std::env::var_os("KANOCLIP_BLESS").is_some() {
        let new = format!("{}{start}{table}{}", &readme[..a], &readme[b..]);
        std::fs::write(&readme_path, new).unwrap();
    } else {
        assert_eq!(
            current, table,
            "README's catalogue differs: rerun with KANOCLIP_BLESS=1"
        );
    }
}

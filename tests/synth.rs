//! The synthetic-defect generator: layout, determinism, and masks that mark exactly the
//! changed pixels.

use kanoclip::data::synth::{Defect, SynthConfig, Texture, add_defect, generate, texture};

#[test]
fn masks_mark_exactly_the_changed_pixels() {
    for t in Texture::ALL {
        for d in Defect::ALL {
            let clean = texture(t, 64, 42);
            let mut img = clean.clone();
            let mask = add_defect(&mut img, d, 7);
            let mut marked = 0;
            for (x, y, m) in mask.enumerate_pixels() {
                let changed = img.get_pixel(x, y) != clean.get_pixel(x, y);
                assert_eq!(m[0] > 0, changed, "{t:?}/{d:?} at {x},{y}");
                marked += usize::from(m[0] > 0);
            }
            assert!(
                (5..64 * 64 / 4).contains(&marked),
                "{t:?}/{d:?}: {marked} pixels"
            );
        }
    }
    // Deterministic from the seed, different across seeds.
    assert_eq!(texture(Texture::Wood, 64, 1), texture(Texture::Wood, 64, 1));
    assert_ne!(texture(Texture::Wood, 64, 1), texture(Texture::Wood, 64, 2));
}

#[test]
fn writes_mvtec_layout() {
    let dir = std::env::temp_dir().join(format!("kanoclip-synth-{}", std::process::id()));
    let cfg = SynthConfig {
        size: 48,
        textures: vec![Texture::Grid, Texture::Noise],
        train_good: 3,
        test_good: 2,
        test_per_defect: 1,
        seed: 5,
    };
    let s = generate(&dir, &cfg).unwrap();
    assert_eq!((s.images, s.masks), (2 * (3 + 2 + 5), 2 * 5));
    for cat in ["grid", "noise"] {
        assert_eq!(
            std::fs::read_dir(dir.join(cat).join("train/good"))
                .unwrap()
                .count(),
            3
        );
        for d in Defect::ALL {
            let img =
                image::open(dir.join(cat).join("test").join(d.name()).join("000.png")).unwrap();
            let mask = image::open(
                dir.join(cat)
                    .join("ground_truth")
                    .join(d.name())
                    .join("000_mask.png"),
            )
            .unwrap();
            assert_eq!((img.width(), img.height()), (mask.width(), mask.height()));
        }
    }
    // Same seed, same files.
    let again = dir.join("again");
    generate(&again, &cfg).unwrap();
    let a = std::fs::read(dir.join("grid/test/crack/000.png")).unwrap();
    let b = std::fs::read(again.join("grid/test/crack/000.png")).unwrap();
    assert_eq!(a, b);
    assert!(generate(&dir, &SynthConfig { size: 8, ..cfg }).is_err());
    std::fs::remove_dir_all(dir).ok();
}

//! Synthetic defects in MVTec AD layout (issue: training and evaluation): textures (noise,
//! stripes, grids, wood-like) with scratches, spots, cracks, holes and colour stains, each
//! with its exact mask. Deterministic from a seed. Tests use it where no real data set can
//! be downloaded; it says nothing about performance on real images.

use std::path::{Path, PathBuf};

use image::{GrayImage, Luma, Rgb, RgbImage};

use crate::atomic;
use crate::error::{Error, Result};

/// A synthetic background.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Texture {
    /// Smooth noise.
    Noise,
    /// Stripes.
    Stripes,
    /// A grid.
    Grid,
    /// Wood-like rings.
    Wood,
}

/// A synthetic defect, drawn with its exact mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defect {
    /// A thin line.
    Scratch,
    /// A round spot.
    Spot,
    /// A branching crack.
    Crack,
    /// A dark hole.
    Hole,
    /// A faint stain.
    Stain,
}

impl Texture {
    /// Every texture.
    pub const ALL: [Texture; 4] = [
        Texture::Noise,
        Texture::Stripes,
        Texture::Grid,
        Texture::Wood,
    ];
    /// Its folder name.
    pub fn name(self) -> &'static str {
        match self {
            Texture::Noise => "noise",
            Texture::Stripes => "stripes",
            Texture::Grid => "grid",
            Texture::Wood => "wood",
        }
    }
}

impl Defect {
    /// Every defect.
    pub const ALL: [Defect; 5] = [
        Defect::Scratch,
        Defect::Spot,
        Defect::Crack,
        Defect::Hole,
        Defect::Stain,
    ];
    /// Its folder name.
    pub fn name(self) -> &'static str {
        match self {
            Defect::Scratch => "scratch",
            Defect::Spot => "spot",
            Defect::Crack => "crack",
            Defect::Hole => "hole",
            Defect::Stain => "stain",
        }
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct SynthConfig {
    /// Image side in pixels.
    pub size: u32,
    /// One category per texture.
    pub textures: Vec<Texture>,
    /// Normal training images per category.
    pub train_good: usize,
    /// Normal test images per category.
    pub test_good: usize,
    /// Test images per defect type.
    pub test_per_defect: usize,
    /// Seed of everything drawn.
    pub seed: u64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            size: 128,
            textures: Texture::ALL.to_vec(),
            train_good: 8,
            test_good: 4,
            test_per_defect: 2,
            seed: 111,
        }
    }
}

/// A seed for one image, independent of generation order.
fn image_seed(
    base: u64,
    texture: Texture,
    split: &str,
    defect: Option<Defect>,
    index: usize,
) -> u64 {
    let mut h: u64 = base ^ 0x9e37_79b9_7f4a_7c15;
    for b in texture
        .name()
        .bytes()
        .chain(split.bytes())
        .chain(defect.map_or("good", Defect::name).bytes())
    {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h ^ (index as u64).wrapping_mul(0xff51_afd7_ed55_8ccd)
}

/// The defect-free texture of one image: the category's pattern with per-image jitter.
pub fn texture(kind: Texture, size: u32, seed: u64) -> RgbImage {
    let mut rng = fastrand::Rng::with_seed(seed);
    let (phase, freq, tilt) = (
        rng.f32() * std::f32::consts::TAU,
        0.15 + rng.f32() * 0.05,
        rng.f32() * 0.3 - 0.15,
    );
    let base = match kind {
        Texture::Noise => [120.0, 120.0, 125.0],
        Texture::Stripes => [90.0, 110.0, 160.0],
        Texture::Grid => [170.0, 170.0, 160.0],
        Texture::Wood => [150.0, 105.0, 60.0],
    };
    let mut noise = fastrand::Rng::with_seed(seed ^ 0x5555);
    RgbImage::from_fn(size, size, |x, y| {
        let (xf, yf) = (x as f32, y as f32);
        let v = match kind {
            Texture::Noise => 0.0,
            Texture::Stripes => 30.0 * ((xf + tilt * yf) * freq + phase).sin(),
            Texture::Grid => {
                if (x + (phase * 3.0) as u32) % 12 < 2 || (y + (phase * 2.0) as u32) % 12 < 2 {
                    -60.0
                } else {
                    0.0
                }
            }
            Texture::Wood => {
                let r = ((xf - size as f32 * 0.3).powi(2) * 0.02
                    + (yf * 0.2 + phase).sin() * 4.0
                    + yf * 0.3)
                    .sqrt();
                25.0 * (r * 1.7 + phase).sin()
            }
        };
        let n = (noise.f32() - 0.5) * 24.0;
        Rgb(base.map(|c| (c + v + n).clamp(0.0, 255.0) as u8))
    })
}

fn disc(mask: &mut GrayImage, cx: f32, cy: f32, r: f32) {
    let (w, h) = mask.dimensions();
    for y in 0..h {
        for x in 0..w {
            if (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) <= r * r {
                mask.put_pixel(x, y, Luma([255]));
            }
        }
    }
}

fn line(mask: &mut GrayImage, (x0, y0): (f32, f32), (x1, y1): (f32, f32), width: f32) {
    let steps = ((x1 - x0).abs().max((y1 - y0).abs()) * 2.0).ceil().max(1.0) as usize;
    for i in 0..=steps {
        let t = i as f32 / steps as f32;
        disc(mask, x0 + (x1 - x0) * t, y0 + (y1 - y0) * t, width / 2.0);
    }
}

/// Draw one defect onto `image`; the mask marks exactly the pixels that changed.
pub fn add_defect(image: &mut RgbImage, defect: Defect, seed: u64) -> GrayImage {
    let (w, h) = image.dimensions();
    let s = w.min(h) as f32;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut at = || (s * (0.2 + 0.6 * rng.f32()), s * (0.2 + 0.6 * rng.f32()));
    let mut shape = GrayImage::new(w, h);
    let (p0, p1) = (at(), at());
    let mut rng = fastrand::Rng::with_seed(seed ^ 0xabcd);
    let colour: Box<dyn Fn(Rgb<u8>) -> Rgb<u8>> = match defect {
        Defect::Scratch => {
            line(&mut shape, p0, p1, 1.5 + rng.f32());
            Box::new(|p| Rgb(p.0.map(|c| c.saturating_add(90))))
        }
        Defect::Spot => {
            disc(&mut shape, p0.0, p0.1, s * (0.03 + 0.04 * rng.f32()));
            Box::new(|p| Rgb(p.0.map(|c| c / 4)))
        }
        Defect::Crack => {
            let mut p = p0;
            for _ in 0..8 {
                let q = (
                    p.0 + (rng.f32() - 0.5) * s * 0.15,
                    p.1 + (rng.f32() - 0.2) * s * 0.1,
                );
                line(&mut shape, p, q, 1.5);
                p = q;
            }
            Box::new(|p| Rgb(p.0.map(|c| c / 3)))
        }
        Defect::Hole => {
            disc(&mut shape, p0.0, p0.1, s * (0.04 + 0.04 * rng.f32()));
            Box::new(|_| Rgb([8, 8, 8]))
        }
        Defect::Stain => {
            let (r1, r2) = (s * (0.05 + 0.05 * rng.f32()), s * (0.03 + 0.04 * rng.f32()));
            for y in 0..h {
                for x in 0..w {
                    if ((x as f32 - p0.0) / r1).powi(2) + ((y as f32 - p0.1) / r2).powi(2) <= 1.0 {
                        shape.put_pixel(x, y, Luma([255]));
                    }
                }
            }
            Box::new(|p| Rgb([p[0] / 2 + 100, p[1] / 3, p[2] / 2 + 60]))
        }
    };
    let mut mask = GrayImage::new(w, h);
    for (x, y, m) in shape.enumerate_pixels() {
        if m[0] > 0 {
            let before = *image.get_pixel(x, y);
            let after = colour(before);
            if after != before {
                image.put_pixel(x, y, after);
                mask.put_pixel(x, y, Luma([255]));
            }
        }
    }
    mask
}

/// What was written.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Images written.
    pub images: usize,
    /// Masks written.
    pub masks: usize,
}

fn save(path: &Path, img: &image::DynamicImage) -> Result<()> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png)
        .map_err(|e| Error::Image(e.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    atomic::write(path, &buf.into_inner())
}

/// Write `root/<texture>/{train/good, test/good, test/<defect>, ground_truth/<defect>}`.
pub fn generate(root: &Path, cfg: &SynthConfig) -> Result<Summary> {
    if cfg.size < 32 || cfg.size > 4096 {
        return Err(Error::Invalid(format!(
            "synthetic image size {} is out of range 32..=4096",
            cfg.size
        )));
    }
    let mut summary = Summary::default();
    for &t in &cfg.textures {
        let dir: PathBuf = root.join(t.name());
        for (split, n) in [("train", cfg.train_good), ("test", cfg.test_good)] {
            for i in 0..n {
                let img = texture(t, cfg.size, image_seed(cfg.seed, t, split, None, i));
                save(
                    &dir.join(split).join("good").join(format!("{i:03}.png")),
                    &img.into(),
                )?;
                summary.images += 1;
            }
        }
        for &d in &Defect::ALL {
            for i in 0..cfg.test_per_defect {
                let seed = image_seed(cfg.seed, t, "test", Some(d), i);
                let mut img = texture(t, cfg.size, seed);
                let mask = add_defect(&mut img, d, seed ^ 0x77);
                save(
                    &dir.join("test").join(d.name()).join(format!("{i:03}.png")),
                    &img.into(),
                )?;
                save(
                    &dir.join("ground_truth")
                        .join(d.name())
                        .join(format!("{i:03}_mask.png")),
                    &mask.into(),
                )?;
                summary.images += 1;
                summary.masks += 1;
            }
        }
    }
    Ok(summary)
}

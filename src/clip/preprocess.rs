//! Image decoding and CLIP pre-processing (spec §1): resize the shorter side to the input
//! size with bicubic filtering, centre crop, scale to [0, 1], normalise with CLIP's mean and
//! standard deviation.

use std::io::Cursor;

use image::{DynamicImage, ImageReader, Limits, imageops::FilterType};

use crate::error::{Error, Result};

// The published values, digit for digit.
#[allow(clippy::excessive_precision)]
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// Images with more pixels than this are refused from their header, before decoding.
pub const MAX_PIXELS: u64 = 100_000_000;

/// Decode an image from its bytes. The header is read first: empty images and images over
/// [`MAX_PIXELS`] are refused before any pixel buffer is allocated.
pub fn decode_image(bytes: &[u8]) -> Result<DynamicImage> {
    if bytes.is_empty() {
        return Err(Error::Image("the file is empty".into()));
    }
    let reader = || {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| Error::Image(format!("cannot read: {e}")))
    };
    // The size, from the header alone, by `imagesize`: the decoders' own header parsing
    // fails on a huge claimed size with "Memory limit exceeded" (on wasm32, whose usize is
    // 32 bits, even without limits), which does not say what is wrong.
    if let Ok(size) = imagesize::blob_size(bytes) {
        check_size(
            u32::try_from(size.width).unwrap_or(u32::MAX),
            u32::try_from(size.height).unwrap_or(u32::MAX),
        )?;
    }
    let mut probe = reader()?;
    probe.no_limits();
    if probe.format().is_none() {
        return Err(Error::Image(
            "not a supported image format (PNG, JPEG, BMP, TIFF, WebP)".into(),
        ));
    }
    let (w, h) = probe
        .into_dimensions()
        .map_err(|e| Error::Image(format!("unreadable header: {e}")))?;
    check_size(w, h)?;
    let mut reader = reader()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    limits.max_alloc = Some(MAX_PIXELS * 8);
    reader.limits(limits);
    reader
        .decode()
        .map_err(|e| Error::Image(format!("cannot decode: {e}")))
}

/// Read and decode an image file.
pub fn load_image(path: impl AsRef<std::path::Path>) -> Result<DynamicImage> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_image(&bytes).map_err(|e| match e {
        Error::Image(msg) => Error::Image(format!("{}: {msg}", path.display())),
        other => other,
    })
}

fn check_size(w: u32, h: u32) -> Result<()> {
    if w == 0 || h == 0 {
        return Err(Error::Image(format!("the image is empty ({w}×{h})")));
    }
    if u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(Error::Image(format!(
            "{w}×{h} is {} pixels, over the limit of {MAX_PIXELS}",
            u64::from(w) * u64::from(h)
        )));
    }
    Ok(())
}

/// Where the model's square input came from in the original image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub original: (u32, u32),
    /// The image after resizing its shorter side to `size`.
    pub resized: (u32, u32),
    /// Top-left corner of the `size × size` crop in the resized image.
    pub crop: (u32, u32),
    pub size: u32,
}

impl Geometry {
    /// torchvision's `Resize(size)` then `CenterCrop(size)`.
    pub fn new(width: u32, height: u32, size: u32) -> Self {
        let (short, long) = if width <= height {
            (width, height)
        } else {
            (height, width)
        };
        let long_resized = (u64::from(size) * u64::from(long) / u64::from(short)) as u32;
        let resized = if width <= height {
            (size, long_resized)
        } else {
            (long_resized, size)
        };
        let crop_at = |total: u32| ((f64::from(total) - f64::from(size)) / 2.0).round() as u32;
        Geometry {
            original: (width, height),
            resized,
            crop: (crop_at(resized.0), crop_at(resized.1)),
            size,
        }
    }
}

/// A pre-processed image: normalised `[3, size, size]` values, channel-major.
pub struct Preprocessed {
    pub pixels: Vec<f32>,
    pub geometry: Geometry,
}

/// Pre-process one image for a model with input `size`. Grey, alpha and 16-bit images are
/// converted to 8-bit RGB first (alpha is dropped, as PIL's `convert("RGB")` does). An RGB
/// image already `size × size` is only scaled and normalised.
pub fn preprocess(image: &DynamicImage, size: u32) -> Result<Preprocessed> {
    check_size(image.width(), image.height())?;
    if size == 0 {
        return Err(Error::Invalid("input size must be positive".into()));
    }
    let geometry = Geometry::new(image.width(), image.height(), size);
    let rgb = image.to_rgb8();
    let rgb = if geometry.resized == (rgb.width(), rgb.height()) {
        rgb
    } else {
        image::imageops::resize(
            &rgb,
            geometry.resized.0,
            geometry.resized.1,
            FilterType::CatmullRom,
        )
    };
    let (x0, y0) = geometry.crop;
    let s = size as usize;
    let mut pixels = vec![0.0f32; 3 * s * s];
    for y in 0..s {
        for x in 0..s {
            let p = rgb.get_pixel(x0 + x as u32, y0 + y as u32);
            for c in 0..3 {
                pixels[c * s * s + y * s + x] =
                    (f32::from(p[c]) / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
            }
        }
    }
    Ok(Preprocessed { pixels, geometry })
}

/// A ground-truth mask through the same resize and centre crop as its image (nearest
/// neighbour, so it stays binary): `size × size` values in {0, 1}, thresholded at 128.
pub fn preprocess_mask(mask: &image::GrayImage, size: u32) -> Result<Vec<f32>> {
    check_size(mask.width(), mask.height())?;
    let g = Geometry::new(mask.width(), mask.height(), size);
    let resized = image::imageops::resize(mask, g.resized.0, g.resized.1, FilterType::Nearest);
    let (x0, y0) = g.crop;
    let mut out = Vec::with_capacity((size * size) as usize);
    for y in 0..size {
        for x in 0..size {
            out.push(if resized.get_pixel(x0 + x, y0 + y)[0] >= 128 {
                1.0
            } else {
                0.0
            });
        }
    }
    Ok(out)
}

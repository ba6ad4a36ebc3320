//! Image decoding and CLIP pre-processing (spec §1): resize the shorter side to the input
//! size with bicubic filtering, centre crop, scale to [0, 1], normalise with CLIP's mean and
//! standard deviation.

use std::io::Cursor;

use burn::prelude::*;
use burn::tensor::TensorData;
use image::{DynamicImage, ImageReader, Limits, imageops::FilterType};

use crate::error::{Error, Result};

// The published values, digit for digit.
/// CLIP's per-channel mean (RGB, on [0, 1] values).
#[allow(clippy::excessive_precision)]
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's per-channel standard deviation.
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// Images with more pixels than this are refused from their header, before decoding.
pub const MAX_PIXELS: u64 = 100_000_000;

/// Decode an image from its bytes. The header is read first: empty images and images over
/// [`MAX_PIXELS`] are refused before any pixel buffer is allocated. A file cut short is
/// refused ([`Error::TruncatedImage`]): decoders fill the missing part with grey and
/// succeed, and that picture must not be scored as if whole.
pub fn decode_image(bytes: &[u8]) -> Result<DynamicImage> {
    match decode_image_lenient(bytes)? {
        (_, Some(why)) => Err(Error::TruncatedImage(why.into())),
        (image, None) => Ok(image),
    }
}

/// [`decode_image`] that also decodes a truncated file, saying why it is truncated (the
/// CLI's `--allow-truncated`, whose report flags such images).
pub fn decode_image_lenient(bytes: &[u8]) -> Result<(DynamicImage, Option<&'static str>)> {
    let image = decode_whole(bytes)?;
    let format = image::guess_format(bytes).ok();
    Ok((image, format.and_then(|f| truncation(bytes, f))))
}

/// Why an encoded file ends before its format says it must, if it does: a JPEG without
/// its end-of-image marker after the last scan, a PNG without its `IEND` chunk, a WebP or
/// BMP shorter than its header's size. Trailing data after the end is allowed (cameras
/// append some).
fn truncation(bytes: &[u8], format: image::ImageFormat) -> Option<&'static str> {
    use image::ImageFormat as F;
    let last = |pat: &[u8]| bytes.windows(pat.len()).rposition(|w| w == pat);
    let le32 = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
    };
    match format {
        F::Jpeg => match (last(&[0xFF, 0xDA]), last(&[0xFF, 0xD9])) {
            (Some(sos), Some(eoi)) if eoi > sos => None,
            _ => Some("the JPEG ends before its end-of-image marker"),
        },
        // The IEND chunk's type and its CRC.
        F::Png => last(b"IEND")
            .is_none_or(|at| at + 8 > bytes.len())
            .then_some("the PNG ends before the end of its IEND chunk"),
        F::WebP => le32(4)
            .is_some_and(|riff| (bytes.len() as u64) < riff + 8)
            .then_some("the WebP file is shorter than its RIFF header says"),
        F::Bmp => le32(2)
            .is_some_and(|size| (bytes.len() as u64) < size)
            .then_some("the BMP file is shorter than its header says"),
        _ => None,
    }
}

fn decode_whole(bytes: &[u8]) -> Result<DynamicImage> {
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
    decode_image(&bytes).map_err(|e| e.in_file(path))
}

fn check_size(w: u32, h: u32) -> Result<()> {
    if w == 0 || h == 0 {
        return Err(Error::Image(format!("the image is empty ({w}×{h})")));
    }
    if u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(Error::ImageTooLarge {
            width: w.into(),
            height: h.into(),
            limit: MAX_PIXELS,
        });
    }
    Ok(())
}

/// Where the model's square input came from in the original image. Sizes in the resized
/// image are 64-bit: a very thin image's long side, resized, can pass `u32::MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// The original image's width and height.
    pub original: (u32, u32),
    /// The image after resizing its shorter side to `size`.
    pub resized: (u64, u64),
    /// Top-left corner of the `size × size` crop in the resized image.
    pub crop: (u64, u64),
    /// The model input's side.
    pub size: u32,
}

impl Geometry {
    /// torchvision's `Resize(size)` then `CenterCrop(size)`: the long side becomes
    /// `⌊size · long / short⌋` and the crop starts at `round((resized − size) / 2)`.
    pub fn new(width: u32, height: u32, size: u32) -> Self {
        let (short, long) = if width <= height {
            (width, height)
        } else {
            (height, width)
        };
        let long_resized = (u64::from(size) * u64::from(long) / u64::from(short.max(1))).max(1);
        let resized = if width <= height {
            (u64::from(size), long_resized)
        } else {
            (long_resized, u64::from(size))
        };
        // round(d / 2), halves away from zero, in integers.
        let crop_at = |total: u64| total.saturating_sub(u64::from(size)).div_ceil(2);
        Geometry {
            original: (width, height),
            resized,
            crop: (crop_at(resized.0), crop_at(resized.1)),
            size,
        }
    }

    /// Whether resizing the whole image would make more than four times the pixels that
    /// the crop keeps (a thin strip, say): then only the part around the crop is resized.
    fn resize_window_only(&self) -> bool {
        let s = u64::from(self.size);
        self.resized.0.saturating_mul(self.resized.1) > 4 * s * s
    }
}

/// A pre-processed image: normalised `[3, size, size]` values, channel-major.
pub struct Preprocessed {
    /// `3 × size × size` values.
    pub pixels: Vec<f32>,
    /// Where they came from.
    pub geometry: Geometry,
}

/// The `size × size` centre crop of the resized image (bicubic, as PIL/torchvision).
///
/// For ordinary images this resizes the whole image and crops, exactly as torchvision does.
/// For images whose resized form would be more than four times the crop (thin strips,
/// 1 px high panoramas), only a window of the source around the crop is resized: memory
/// then depends on the model input, never on the image's long side. That window's scale
/// matches the whole-image resize to within one resized pixel at its ends.
fn resized_crop<P>(
    rgb: &image::ImageBuffer<P, Vec<P::Subpixel>>,
    g: &Geometry,
    resize: impl Fn(
        &image::ImageBuffer<P, Vec<P::Subpixel>>,
        u32,
        u32,
    ) -> Result<image::ImageBuffer<P, Vec<P::Subpixel>>>,
) -> Result<image::ImageBuffer<P, Vec<P::Subpixel>>>
where
    P: image::Pixel + 'static,
{
    let (w, h) = rgb.dimensions();
    let s = g.size;
    if g.resized == (u64::from(w), u64::from(h)) {
        return Ok(
            image::imageops::crop_imm(rgb, g.crop.0 as u32, g.crop.1 as u32, s, s).to_image(),
        );
    }
    if !g.resize_window_only() {
        // Both resized sides are at most 4·size here, so they fit in u32.
        let (rw, rh) = (g.resized.0 as u32, g.resized.1 as u32);
        let resized = resize(rgb, rw, rh)?;
        return Ok(
            image::imageops::crop_imm(&resized, g.crop.0 as u32, g.crop.1 as u32, s, s).to_image(),
        );
    }
    // The long axis: x for a wide image, y for a tall one. Scale f = size / short side.
    let wide = w > h;
    let (long, short) = if wide { (w, h) } else { (h, w) };
    let crop = if wide { g.crop.0 } else { g.crop.1 };
    let f = f64::from(s) / f64::from(short);
    // Source window around the crop, padded by the bicubic filter's reach (2 source pixels
    // when enlarging, 2 / f when shrinking) and one more.
    let pad = (2.0 / f).ceil().max(2.0) + 1.0;
    let lo = ((crop as f64 / f) - pad).floor().max(0.0);
    let hi = (((crop + u64::from(s)) as f64 / f) + pad)
        .ceil()
        .min(f64::from(long));
    let (src_lo, src_len) = (lo as u32, (hi - lo).max(1.0) as u32);
    let out_lo = (lo * f).round() as u64;
    let out_len = ((hi - lo) * f).round().max(f64::from(s)) as u32;
    let window = if wide {
        image::imageops::crop_imm(rgb, src_lo, 0, src_len, h).to_image()
    } else {
        image::imageops::crop_imm(rgb, 0, src_lo, w, src_len).to_image()
    };
    let (ow, oh) = if wide { (out_len, s) } else { (s, out_len) };
    let resized = resize(&window, ow, oh)?;
    let at = (crop.saturating_sub(out_lo) as u32).min(out_len - s);
    let (x0, y0) = if wide { (at, 0) } else { (0, at) };
    Ok(image::imageops::crop_imm(&resized, x0, y0, s, s).to_image())
}

/// Bicubic resize of 8-bit RGB to `width × height`, as PIL's `Image.resize(BICUBIC)` that
/// open_clip's transform calls: Catmull-Rom (a = −0.5) with the filter widened by the
/// scale when shrinking, in Pillow's fixed point with 8-bit rounding between the passes.
/// Typed for RGB alone, so that only that pixel format's code goes into the wasm module.
fn bicubic(rgb: &image::RgbImage, width: u32, height: u32) -> Result<image::RgbImage> {
    use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer, images, pixels};
    let bad = |e: &dyn std::fmt::Display| Error::Invalid(format!("resize: {e}"));
    let src =
        images::TypedImageRef::<pixels::U8x3>::from_buffer(rgb.width(), rgb.height(), rgb.as_raw())
            .map_err(|e| bad(&e))?;
    let mut out = vec![0u8; 3 * width as usize * height as usize];
    let mut dst = images::TypedImage::<pixels::U8x3>::from_buffer(width, height, &mut out)
        .map_err(|e| bad(&e))?;
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom));
    Resizer::new()
        .resize_typed(&src, &mut dst, &options)
        .map_err(|e| bad(&e))?;
    drop(dst);
    image::RgbImage::from_raw(width, height, out)
        .ok_or_else(|| Error::Invalid("resize: bad output buffer".into()))
}

/// Raw RGBA pixels (`width × height × 4` bytes, as a canvas's `ImageData` holds them) as an
/// image: the size is checked against [`MAX_PIXELS`] and the buffer's length first.
pub fn rgba_image(width: u32, height: u32, rgba: Vec<u8>) -> Result<DynamicImage> {
    if width == 0 || height == 0 {
        return Err(Error::Invalid(format!(
            "the RGBA image is {width}×{height} pixels"
        )));
    }
    check_size(width, height)?;
    let want = u64::from(width) * u64::from(height) * 4;
    if rgba.len() as u64 != want {
        return Err(Error::Invalid(format!(
            "{} bytes of RGBA for {width}×{height} (want {want})",
            rgba.len()
        )));
    }
    image::RgbaImage::from_raw(width, height, rgba)
        .map(DynamicImage::ImageRgba8)
        .ok_or_else(|| Error::Invalid("bad RGBA buffer".into()))
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
    let crop = match image.as_rgb8() {
        Some(rgb) => resized_crop(rgb, &geometry, bicubic)?,
        None => resized_crop(&image.to_rgb8(), &geometry, bicubic)?,
    };
    let s = size as usize;
    let mut pixels = vec![0.0f32; 3 * s * s];
    for (x, y, p) in crop.enumerate_pixels() {
        let i = y as usize * s + x as usize;
        for c in 0..3 {
            pixels[c * s * s + i] = (f32::from(p[c]) / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
        }
    }
    Ok(Preprocessed { pixels, geometry })
}

/// Pre-process a batch into one `[n, 3, size, size]` tensor on `device`, with each image's
/// geometry: the one place where images become model input.
pub fn image_batch(
    images: &[DynamicImage],
    size: usize,
    device: &Device,
) -> Result<(Tensor<4>, Vec<Geometry>)> {
    let side = u32::try_from(size)
        .map_err(|_| Error::Invalid(format!("input size {size} is too large")))?;
    let mut pixels = Vec::with_capacity(images.len() * 3 * size * size);
    let mut geometry = Vec::with_capacity(images.len());
    for image in images {
        let p = preprocess(image, side)?;
        pixels.extend(p.pixels);
        geometry.push(p.geometry);
    }
    let batch = Tensor::from_data(
        TensorData::new(pixels, [images.len(), 3, size, size]),
        device,
    );
    Ok((batch, geometry))
}

/// A ground-truth mask through the same resize and centre crop as its image (nearest
/// neighbour, so it stays binary): `size × size` values in {0, 1}, thresholded at 128.
pub fn preprocess_mask(mask: &image::GrayImage, size: u32) -> Result<Vec<f32>> {
    check_size(mask.width(), mask.height())?;
    let g = Geometry::new(mask.width(), mask.height(), size);
    let nearest =
        |m: &image::GrayImage, w, h| Ok(image::imageops::resize(m, w, h, FilterType::Nearest));
    let crop = resized_crop(mask, &g, nearest)?;
    Ok(crop
        .pixels()
        .map(|p| if p[0] >= 128 { 1.0 } else { 0.0 })
        .collect())
}

//! Pictures of a detection: a colour-mapped heatmap and an overlay on the image, as RGBA.

use image::{DynamicImage, Rgba, RgbaImage};

use super::AnomalyMap;
use crate::error::{Error, Result};

fn colour(v: f32) -> [u8; 3] {
    let c = colorous::TURBO.eval_continuous(f64::from(v.clamp(0.0, 1.0)));
    [c.r, c.g, c.b]
}

/// The map in the Turbo colour map (0 blue, 1 red), opaque.
pub fn heatmap(map: &AnomalyMap) -> Result<RgbaImage> {
    let (w, h) = (map.width, map.height);
    if map.values.len() != (w as usize) * (h as usize) {
        return Err(Error::Invalid(format!(
            "map holds {} values, not {w}×{h}",
            map.values.len()
        )));
    }
    Ok(RgbaImage::from_fn(w, h, |x, y| {
        let [r, g, b] = colour(map.values[(y * w + x) as usize]);
        Rgba([r, g, b, 255])
    }))
}

/// The heatmap blended over the image, `opacity` in [0, 1]; both at the image's size.
pub fn overlay(image: &DynamicImage, map: &AnomalyMap, opacity: f32) -> Result<RgbaImage> {
    if (image.width(), image.height()) != (map.width, map.height) {
        return Err(Error::Invalid(format!(
            "map is {}×{} but the image is {}×{}",
            map.width,
            map.height,
            image.width(),
            image.height()
        )));
    }
    let a = opacity.clamp(0.0, 1.0);
    let base = image.to_rgba8();
    let heat = heatmap(map)?;
    Ok(RgbaImage::from_fn(map.width, map.height, |x, y| {
        let p = base.get_pixel(x, y);
        let q = heat.get_pixel(x, y);
        let mix = |i: usize| (f32::from(p[i]) * (1.0 - a) + f32::from(q[i]) * a).round() as u8;
        Rgba([mix(0), mix(1), mix(2), 255])
    }))
}

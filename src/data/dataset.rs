//! Data-set layouts people evaluate zero-shot anomaly detectors on: MVTec AD, MVTec LOCO,
//! VisA (`split_csv/1cls.csv`) and a generic folder layout like anomalib's `Folder`.
//! Loading checks every file up front (in parallel) and names each problem.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::{Error, Result};

/// A data-set layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Format {
    /// MVTec AD.
    Mvtec,
    /// VisA (`split_csv/1cls.csv`).
    Visa,
    /// MVTec LOCO AD.
    Loco,
    /// A folder with `normal/`, `abnormal/` and `masks/`.
    Folder,
}

/// Train or test split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Training images (normal only).
    Train,
    /// Test images (normal and anomalous).
    Test,
}

/// One image.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The image file.
    pub path: PathBuf,
    /// Its category.
    pub category: String,
    /// Its split.
    pub split: Split,
    /// `true` for an anomalous image.
    pub label: bool,
    /// Ground-truth masks (their union is the mask; MVTec LOCO has several per image).
    /// Empty for normal images, and for anomalous ones in layouts without masks.
    pub masks: Vec<PathBuf>,
}

/// A data set, checked.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Its folder.
    pub root: PathBuf,
    /// Every usable image, in a stable order.
    pub samples: Vec<Sample>,
    /// Images whose file or mask cannot be read, with why: left out of `samples` so that
    /// one bad file never costs a run; `eval` lists them among its failures.
    pub unreadable: Vec<(Sample, String)>,
}

const IMAGE_EXT: [&str; 6] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff"];

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXT.contains(&e.to_ascii_lowercase().as_str()))
}

/// Image files directly in `dir`, sorted; none if it does not exist.
fn images_in(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image(p))
        .collect();
    out.sort();
    Ok(out)
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    Ok(out)
}

fn name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Dataset {
    /// Read a layout and check it: every anomalous image with masks must have them and
    /// each mask the size of its image (or the data set is refused); an image or mask
    /// whose header cannot be read sets that sample aside in `unreadable`.
    pub fn load(root: impl AsRef<Path>, format: Format) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(Error::io(
                &root,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such data-set folder"),
            ));
        }
        let mut problems = Vec::new();
        let samples = match format {
            Format::Mvtec => mvtec(&root, &mut problems)?,
            Format::Loco => loco(&root, &mut problems)?,
            Format::Visa => visa(&root, &mut problems)?,
            Format::Folder => folder(&root, &mut problems)?,
        };
        if samples.is_empty() && problems.is_empty() {
            problems.push(format!(
                "{}: no images found in {format:?} layout",
                root.display()
            ));
        }
        let unreadable_why = check_files(&samples, &mut problems);
        if !problems.is_empty() {
            return Err(Error::Dataset(problems));
        }
        let (mut usable, mut unreadable) = (Vec::new(), Vec::new());
        for (s, why) in samples.into_iter().zip(unreadable_why) {
            match why {
                Some(why) => unreadable.push((s, why)),
                None => usable.push(s),
            }
        }
        if usable.is_empty() {
            let first = unreadable.first().map_or(String::new(), |(_, w)| w.clone());
            return Err(Error::Dataset(vec![format!(
                "{}: no readable images ({first})",
                root.display()
            )]));
        }
        Ok(Dataset {
            root,
            samples: usable,
            unreadable,
        })
    }

    /// Category names in order.
    pub fn categories(&self) -> Vec<String> {
        let mut c: Vec<String> = self.samples.iter().map(|s| s.category.clone()).collect();
        c.dedup();
        c.sort();
        c.dedup();
        c
    }
}

/// Headers of every image and mask, read in parallel. A mask whose size differs from its
/// image's is a problem of the data set (added to `problems`); per sample, why it cannot
/// be read (its image or a mask), or `None`.
fn check_files(samples: &[Sample], problems: &mut Vec<String>) -> Vec<Option<String>> {
    let checked: Vec<(Option<String>, Vec<String>)> = samples
        .par_iter()
        .map(|s| {
            let mut bad_size = Vec::new();
            let size = match image::image_dimensions(&s.path) {
                Err(e) => {
                    let why = format!("{}: unreadable image ({e})", s.path.display());
                    return (Some(why), bad_size);
                }
                Ok(size) => size,
            };
            for m in &s.masks {
                match image::image_dimensions(m) {
                    Err(e) => {
                        let why = format!("{}: unreadable mask ({e})", m.display());
                        return (Some(why), bad_size);
                    }
                    Ok(ms) if ms != size => bad_size.push(format!(
                        "{}: mask is {}×{} but its image {} is {}×{}",
                        m.display(),
                        ms.0,
                        ms.1,
                        s.path.display(),
                        size.0,
                        size.1
                    )),
                    Ok(_) => {}
                }
            }
            (None, bad_size)
        })
        .collect();
    checked
        .into_iter()
        .map(|(why, bad_size)| {
            problems.extend(bad_size);
            why
        })
        .collect()
}

/// MVTec AD and MVTec LOCO share a shape: `<cat>/{train dirs}` of normal images and
/// `<cat>/test/<kind>/` with `good` normal; they differ in where masks live.
fn mvtec_like(
    root: &Path,
    train_dirs: &[&str],
    masks_for: impl Fn(&Path, &str, &Path) -> Result<Vec<PathBuf>>,
    problems: &mut Vec<String>,
) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    for cat_dir in subdirs(root)? {
        let cat = name(&cat_dir);
        if !cat_dir.join("test").is_dir() {
            continue;
        }
        for dir in train_dirs {
            for p in images_in(&cat_dir.join(dir))? {
                out.push(Sample {
                    path: p,
                    category: cat.clone(),
                    split: Split::Train,
                    label: false,
                    masks: vec![],
                });
            }
        }
        for kind_dir in subdirs(&cat_dir.join("test"))? {
            let kind = name(&kind_dir);
            for p in images_in(&kind_dir)? {
                let label = kind != "good";
                let masks = if label {
                    masks_for(&cat_dir, &kind, &p)?
                } else {
                    vec![]
                };
                if label && masks.iter().all(|m| !m.is_file()) {
                    let want = masks
                        .first()
                        .map_or_else(|| "its masks".into(), |m| m.display().to_string());
                    problems.push(format!(
                        "{}: anomalous image has no mask ({want})",
                        p.display()
                    ));
                }
                out.push(Sample {
                    path: p,
                    category: cat.clone(),
                    split: Split::Test,
                    label,
                    masks,
                });
            }
        }
    }
    Ok(out)
}

fn mvtec(root: &Path, problems: &mut Vec<String>) -> Result<Vec<Sample>> {
    // ground_truth/<defect>/<stem>_mask.png
    let masks = |cat: &Path, kind: &str, img: &Path| {
        Ok(vec![
            cat.join("ground_truth")
                .join(kind)
                .join(format!("{}_mask.png", stem(img))),
        ])
    };
    mvtec_like(root, &["train/good"], masks, problems)
}

fn loco(root: &Path, problems: &mut Vec<String>) -> Result<Vec<Sample>> {
    // ground_truth/<kind>/<stem>/000.png, 001.png, …: their union.
    let masks = |cat: &Path, kind: &str, img: &Path| {
        images_in(&cat.join("ground_truth").join(kind).join(stem(img)))
    };
    mvtec_like(root, &["train/good", "validation/good"], masks, problems)
}

/// The columns of VisA's `split_csv/1cls.csv`, in the order [`visa_row`] reads them.
const VISA_COLUMNS: [&str; 5] = ["object", "split", "label", "image", "mask"];

fn visa(root: &Path, problems: &mut Vec<String>) -> Result<Vec<Sample>> {
    let csv_path = root.join("split_csv/1cls.csv");
    let text = std::fs::read_to_string(&csv_path).map_err(|e| Error::io(&csv_path, e))?;
    visa_csv(root, &csv_path, &text, problems)
}

/// The samples of VisA's CSV `text` (read from `csv_path`), every path inside `root`.
pub(crate) fn visa_csv(
    root: &Path,
    csv_path: &Path,
    text: &str,
    problems: &mut Vec<String>,
) -> Result<Vec<Sample>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .collect();
    let cols: Option<Vec<usize>> = VISA_COLUMNS
        .iter()
        .map(|n| header.iter().position(|h| h == n))
        .collect();
    let Some(cols) = cols else {
        return Err(Error::Dataset(vec![format!(
            "{}: expected the columns {}; found {}",
            csv_path.display(),
            VISA_COLUMNS.join(","),
            header.join(",")
        )]));
    };
    let mut out = Vec::new();
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let row: Vec<&str> = cols
            .iter()
            .map(|&c| f.get(c).copied().unwrap_or(""))
            .collect();
        let at = format!("{} line {}", csv_path.display(), i + 2);
        match visa_row(root, &row, &at, problems) {
            Ok(sample) => out.push(sample),
            Err(problem) => problems.push(problem),
        }
    }
    Ok(out)
}

/// `root/rel` when `rel` is a relative path that stays inside `root` (no `..`, no
/// absolute path, no drive or root prefix).
fn inside(root: &Path, rel: &str) -> Option<PathBuf> {
    use std::path::Component;
    let p = Path::new(rel);
    p.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        .then(|| root.join(p))
}

/// One CSV row (`object, split, label, image, mask`) to a sample; a row that cannot be
/// used is a problem (`Err`); a usable row with a missing mask adds a problem and is kept.
fn visa_row(
    root: &Path,
    row: &[&str],
    at: &str,
    problems: &mut Vec<String>,
) -> std::result::Result<Sample, String> {
    let [obj, split, label, image, mask] = [row[0], row[1], row[2], row[3], row[4]];
    let anomalous = match label {
        "normal" => false,
        "anomaly" => true,
        other => {
            return Err(format!(
                "{at}: label `{other}` is neither normal nor anomaly"
            ));
        }
    };
    let split = match split {
        "train" => Split::Train,
        "test" => Split::Test,
        other => return Err(format!("{at}: split `{other}` is neither train nor test")),
    };
    let escape = |p: &str| format!("{at}: path `{p}` leaves the data set's folder");
    let path = inside(root, image).ok_or_else(|| escape(image))?;
    let masks = if anomalous && !mask.is_empty() {
        vec![inside(root, mask).ok_or_else(|| escape(mask))?]
    } else {
        vec![]
    };
    if anomalous && masks.is_empty() && split == Split::Test {
        problems.push(format!(
            "{}: anomalous test image has no mask ({at})",
            path.display()
        ));
    }
    for m in &masks {
        if !m.is_file() {
            problems.push(format!(
                "{}: mask {} does not exist",
                path.display(),
                m.display()
            ));
        }
    }
    Ok(Sample {
        path,
        category: obj.to_string(),
        split,
        label: anomalous,
        masks,
    })
}

fn folder(root: &Path, problems: &mut Vec<String>) -> Result<Vec<Sample>> {
    let cat = name(root);
    let mut out: Vec<Sample> = images_in(&root.join("normal"))?
        .into_iter()
        .map(|p| Sample {
            path: p,
            category: cat.clone(),
            split: Split::Test,
            label: false,
            masks: vec![],
        })
        .collect();
    let mask_dir = root.join("masks");
    for p in images_in(&root.join("abnormal"))? {
        let masks = if mask_dir.is_dir() {
            let found = [
                name(&p),
                format!("{}.png", stem(&p)),
                format!("{}_mask.png", stem(&p)),
            ]
            .into_iter()
            .map(|n| mask_dir.join(n))
            .find(|m| m.is_file());
            match found {
                Some(m) => vec![m],
                None => {
                    problems.push(format!(
                        "{}: no mask for it in {}",
                        p.display(),
                        mask_dir.display()
                    ));
                    vec![]
                }
            }
        } else {
            vec![]
        };
        out.push(Sample {
            path: p,
            category: cat.clone(),
            split: Split::Test,
            label: true,
            masks,
        });
    }
    Ok(out)
}

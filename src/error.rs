//! One error type for the whole crate: every bad input ends here, typed, never as a panic.
//!
//! A caller can match on what went wrong: [`Error::Image`] (a bad image),
//! [`Error::ImageTooLarge`], [`Error::WeightsMismatch`], [`Error::Incompatible`] (a head,
//! bundle or memory built for another backbone or format), [`Error::Integrity`] (a file
//! that is not the one its manifest names), [`Error::BackendUnavailable`] and
//! [`Error::Io`]. [`Error::kind`] names the variant as a stable string. Errors about a named file come wrapped in [`Error::InFile`];
//! [`Error::root`] looks through the wrapping.

use std::path::PathBuf;

/// A failure of the compute backend, kept with its source.
pub type BoxedSource = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in kanoclip.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// Any other error about the contents of a named file.
    #[error("{path}: {source}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: Box<Error>,
    },
    /// JSON that could not be written or read where no more specific variant applies.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A model configuration is malformed or describes an impossible model.
    #[error("invalid model config: {0}")]
    Config(String),
    /// A weights file is not a readable safetensors file.
    #[error("invalid weights file: {0}")]
    WeightsFormat(String),
    /// The weights do not fit the configuration: every problem is listed.
    #[error("weights do not match the config:\n  {}", .0.join("\n  "))]
    WeightsMismatch(Vec<String>),
    /// A knowledge base is malformed.
    #[error("invalid knowledge base: {0}")]
    Knowledge(String),
    /// A head file is unreadable or corrupt.
    #[error("invalid head file: {0}")]
    Head(String),
    /// A downloaded or stored file is not the one its manifest names (size or SHA-256).
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// A head, bundle or other model file that is well formed but was made for another
    /// backbone, format version or detector settings than the one it meets.
    #[error("incompatible model file: {0}")]
    Incompatible(String),
    /// A data set is missing or half-formed: every problem, with the files it concerns.
    #[error("invalid data set:\n  {}", .0.join("\n  "))]
    Dataset(Vec<String>),
    /// An input image was refused or could not be decoded.
    #[error("invalid image: {0}")]
    Image(String),
    /// An image file cut short: decoders would fill the missing part and succeed.
    #[error("invalid image: truncated: {0}")]
    TruncatedImage(String),
    /// An image whose header claims more pixels than kanoclip accepts.
    #[error("invalid image: {width}×{height} is {} pixels, over the limit of {limit}", width * height)]
    ImageTooLarge {
        /// Width from the header.
        width: u64,
        /// Height from the header.
        height: u64,
        /// The pixel limit.
        limit: u64,
    },
    /// A request to the API made no sense (empty batch, tap out of range...).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The model gave NaN or infinity where a score or map was due: the weights (or a
    /// head or memory) hold values that make no sense. Never a low score.
    #[error("non-finite output: {0}")]
    NonFinite(String),
    /// The asked-for compute backend is not in this build or has no usable device.
    #[error("backend unavailable: {0}")]
    BackendUnavailable(String),
    /// The compute backend failed (device lost, read-back failed...).
    #[error("backend error: {context}: {source}")]
    Backend {
        /// What kanoclip was doing.
        context: &'static str,
        /// The backend's own error.
        #[source]
        source: BoxedSource,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wrap an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Say which file this error is about (I/O errors already name theirs).
    pub fn in_file(self, path: impl Into<PathBuf>) -> Self {
        match self {
            e @ (Error::Io { .. } | Error::InFile { .. }) => e,
            e => Error::InFile {
                path: path.into(),
                source: Box::new(e),
            },
        }
    }

    /// The variant's stable name (`"image-too-large"`, `"integrity"`…), looking through
    /// [`Error::InFile`]: for reports, logs and the bad-input catalogue.
    pub fn kind(&self) -> &'static str {
        match self.root() {
            Error::Io { .. } => "io",
            Error::InFile { .. } => "in-file",
            Error::Json(_) => "json",
            Error::Config(_) => "config",
            Error::WeightsFormat(_) => "weights-format",
            Error::WeightsMismatch(_) => "weights-mismatch",
            Error::Knowledge(_) => "knowledge",
            Error::Head(_) => "head",
            Error::Integrity(_) => "integrity",
            Error::Incompatible(_) => "incompatible",
            Error::Dataset(_) => "dataset",
            Error::Image(_) => "image",
            Error::TruncatedImage(_) => "truncated-image",
            Error::ImageTooLarge { .. } => "image-too-large",
            Error::Invalid(_) => "invalid",
            Error::NonFinite(_) => "non-finite",
            Error::BackendUnavailable(_) => "backend-unavailable",
            Error::Backend { .. } => "backend",
        }
    }

    /// The error itself, looking through [`Error::InFile`] wrappers.
    pub fn root(&self) -> &Error {
        match self {
            Error::InFile { source, .. } => source.root(),
            e => e,
        }
    }

    /// A backend failure with what was being done.
    pub fn backend(context: &'static str, source: impl Into<BoxedSource>) -> Self {
        Error::Backend {
            context,
            source: source.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_file_names_the_file_and_keeps_the_variant() {
        let e = Error::Image("cannot decode".into()).in_file("a/b.png");
        assert_eq!(e.to_string(), "a/b.png: invalid image: cannot decode");
        assert!(matches!(e.root(), Error::Image(m) if m == "cannot decode"));
        // Wrapping twice, or wrapping an I/O error, does not repeat the path.
        let twice = e.in_file("c.png");
        assert_eq!(twice.to_string(), "a/b.png: invalid image: cannot decode");
        let io = Error::io("x", std::io::Error::other("gone")).in_file("y");
        assert_eq!(io.to_string(), "x: gone");
    }

    #[test]
    fn backend_errors_keep_their_source() {
        let e = Error::backend("reading back", std::io::Error::other("device lost"));
        assert_eq!(e.to_string(), "backend error: reading back: device lost");
        let source = std::error::Error::source(&e).expect("source kept");
        assert_eq!(source.to_string(), "device lost");
    }

    #[test]
    fn too_large_images_say_how_large() {
        let e = Error::ImageTooLarge {
            width: 60_000,
            height: 60_000,
            limit: 100_000_000,
        };
        assert!(e.to_string().contains("3600000000 pixels"), "{e}");
    }
}

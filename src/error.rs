//! One error type for the whole crate: every bad input ends here, typed, never as a panic.

use std::path::PathBuf;

/// Everything that can go wrong in kanoclip.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    /// A head file is unreadable, corrupt, or built for another backbone.
    #[error("invalid head file: {0}")]
    Head(String),
    /// A data set is missing or half-formed: every problem, with the files it concerns.
    #[error("invalid data set:\n  {}", .0.join("\n  "))]
    Dataset(Vec<String>),
    /// An input image was refused or could not be decoded.
    #[error("invalid image: {0}")]
    Image(String),
    /// A request to the API made no sense (empty batch, tap out of range...).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The compute backend failed (device lost, readback failed...).
    #[error("backend error: {0}")]
    Backend(String),
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
}

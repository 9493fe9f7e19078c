//! Codecs: Opus for audio ([`audio`]), H.264 for video ([`video`]). Encoded frames are
//! what SFrame encrypts whole.

pub mod audio;
pub mod video;

/// Why a codec operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The codec library refused (bad parameters, corrupt input).
    #[error("{codec}: {message}")]
    Codec {
        /// Which codec.
        codec: &'static str,
        /// What it said.
        message: String,
    },
}

pub(crate) fn opus_err(e: opus::Error) -> CodecError {
    CodecError::Codec {
        codec: "opus",
        message: e.to_string(),
    }
}

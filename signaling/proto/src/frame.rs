//! Framing: `u32` big-endian length, then the postcard encoding of one message.
//!
//! The length is checked against [`MAX_FRAME_LEN`] before any byte of the body is
//! buffered, so a peer cannot make us allocate more than that for one frame.

use bytes::BytesMut;
use serde::{Serialize, de::DeserializeOwned};
use tokio_util::codec::LengthDelimitedCodec;

/// The largest frame body either side accepts: 1 MiB. Sized for rooms of 500, measured
/// (`cargo run --release -p sotto-client --example mls_sizes`): adding 499 at once is a
/// 143 KB commit, a 167 KB Welcome and a 91 KB GroupInfo in one `Commit` request (401 KB);
/// one more joiner is 42 + 92 + 91 KB. Twice the largest, so a hostile peer still costs
/// at most 1 MiB a frame.
pub const MAX_FRAME_LEN: usize = 1024 * 1024;

/// Why bytes are not a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix announces more than [`MAX_FRAME_LEN`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    TooLarge(usize),
    /// The body is not a valid encoding of the expected message.
    #[error("undecodable message: {0}")]
    Malformed(String),
    /// The stream failed while reading a frame.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// The length-delimited codec both ends use (4-byte big-endian length, capped).
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .big_endian()
        .length_field_length(4)
        .max_frame_length(MAX_FRAME_LEN)
        .new_codec()
}

/// Encodes a message body (without the length prefix).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = postcard::to_stdvec(msg).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if body.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(body.len()));
    }
    Ok(body)
}

/// Decodes a message body. Trailing bytes make the frame malformed.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    if body.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(body.len()));
    }
    let (msg, rest) =
        postcard::take_from_bytes(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(msg)
}

/// Decodes the next complete frame from `buf`, if one is there: the sans-IO form of the
/// codec, for tests and fuzzing.
pub fn decode_frame<T: DeserializeOwned>(buf: &mut BytesMut) -> Result<Option<T>, FrameError> {
    use tokio_util::codec::Decoder;
    match codec().decode(buf) {
        Ok(Some(body)) => decode(&body).map(Some),
        Ok(None) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            let len = buf
                .get(..4)
                .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
            Err(FrameError::TooLarge(len))
        }
        Err(e) => Err(FrameError::Io(e)),
    }
}

/// Encodes a message with its length prefix, ready to write.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = encode(msg)?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

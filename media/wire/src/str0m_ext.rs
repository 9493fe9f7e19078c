//! RFC 9626 frame marking through str0m without a per-packet allocation.
//!
//! str0m knows only the draft-07 form (URI `…draft-ietf-avtext-framemarking-07`, 4 bytes),
//! and drops shorter values; our clients send the RFC's 1–3 byte form under its own URI.
//! An unknown-URI extension would normally land in `ExtensionValues::user_values`, a map
//! allocated per packet and cloned per subscriber. Instead this serializer packs the value
//! into the plain `frame_mark: Option<u32>` field, which the SFU's extension map leaves
//! unused otherwise (it never maps the draft-07 extension): the length in the top byte and
//! the value bytes below. Parsing and forwarding then copy a `u32`.

use crate::rtp_ext::{FRAME_MARKING_URI, FrameMarking};
use str0m::rtp::{Extension, ExtensionSerializer, ExtensionValues};

/// The serializer for [`FRAME_MARKING_URI`]; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rfc9626;

impl Rfc9626 {
    /// The extension to put in an `ExtensionMap`.
    pub fn extension() -> Extension {
        Extension::with_serializer(FRAME_MARKING_URI, Rfc9626)
    }

    /// The frame marking carried in `ev`, if any.
    pub fn read(ev: &ExtensionValues) -> Option<FrameMarking> {
        let packed = ev.frame_mark?;
        let len = (packed >> 24) as usize;
        let bytes = packed.to_be_bytes();
        FrameMarking::parse(bytes.get(1..1 + len)?)
    }

    /// Puts `fm` into `ev` as the packed form.
    pub fn write(ev: &mut ExtensionValues, fm: &FrameMarking) {
        ev.frame_mark = pack(&fm.encode());
    }
}

fn pack(value: &[u8]) -> Option<u32> {
    if value.is_empty() || value.len() > 3 {
        return None;
    }
    let mut bytes = [0u8; 4];
    bytes[0] = value.len() as u8;
    bytes[1..1 + value.len()].copy_from_slice(value);
    Some(u32::from_be_bytes(bytes))
}

impl ExtensionSerializer for Rfc9626 {
    fn write_to(&self, buf: &mut [u8], ev: &ExtensionValues) -> usize {
        let Some(packed) = ev.frame_mark else {
            return 0;
        };
        let len = (packed >> 24) as usize;
        let bytes = packed.to_be_bytes();
        match (bytes.get(1..1 + len), buf.get_mut(..len)) {
            (Some(value), Some(out)) if len > 0 => {
                out.copy_from_slice(value);
                len
            }
            _ => 0,
        }
    }

    fn parse_value(&self, buf: &[u8], ev: &mut ExtensionValues) -> bool {
        match pack(buf) {
            Some(packed) if FrameMarking::parse(buf).is_some() => {
                ev.frame_mark = Some(packed);
                true
            }
            _ => false,
        }
    }

    fn is_video(&self) -> bool {
        true
    }

    fn is_audio(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_length_round_trips_through_the_packed_field() {
        let forms = [
            FrameMarking {
                start: true,
                independent: true,
                tid: 2,
                ..Default::default()
            },
            FrameMarking {
                end: true,
                lid: Some(1),
                ..Default::default()
            },
            FrameMarking {
                start: true,
                base_sync: true,
                lid: Some(2),
                tl0_pic_idx: Some(77),
                ..Default::default()
            },
        ];
        for fm in forms {
            let wire = fm.encode();
            let mut ev = ExtensionValues::default();
            assert!(Rfc9626.parse_value(&wire, &mut ev));
            assert_eq!(Rfc9626::read(&ev), Some(fm));
            let mut out = [0u8; 16];
            let n = Rfc9626.write_to(&mut out, &ev);
            assert_eq!(&out[..n], wire.as_slice());
        }
        let mut ev = ExtensionValues::default();
        assert!(!Rfc9626.parse_value(&[], &mut ev));
        assert!(!Rfc9626.parse_value(&[1, 2, 3, 4], &mut ev));
        assert_eq!(ev.frame_mark, None);
        assert_eq!(Rfc9626.write_to(&mut [0u8; 4], &ev), 0);
    }
}

//! Capture and playout devices: microphones and speakers through cpal (ALSA on Linux),
//! cameras through nokhwa (V4L2). Every call also runs on synthetic sources; a device that
//! is asked for and cannot be used is a clear error that names the devices that exist.

pub mod audio;
pub mod camera;

use std::fmt;

/// What kind of device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// Audio capture.
    Microphone,
    /// Audio playout.
    Speaker,
    /// Video capture.
    Camera,
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Microphone => "microphone",
            Self::Speaker => "speaker",
            Self::Camera => "camera",
        })
    }
}

/// Why a device cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// No device of that name exists.
    #[error("{kind} {requested:?} is not available; {}", existing(*kind, available))]
    NotFound {
        /// Microphone, speaker or camera.
        kind: DeviceKind,
        /// What was asked for.
        requested: String,
        /// The devices of that kind that do exist.
        available: Vec<String>,
    },
    /// It exists but could not be opened or configured.
    #[error("{kind} {name:?} could not be opened: {reason}; {}", existing(*kind, available))]
    Open {
        /// Microphone, speaker or camera.
        kind: DeviceKind,
        /// The device.
        name: String,
        /// What the system said.
        reason: String,
        /// The devices of that kind that do exist.
        available: Vec<String>,
    },
}

fn existing(kind: DeviceKind, available: &[String]) -> String {
    let synth = match kind {
        DeviceKind::Microphone => "--audio-in synth",
        DeviceKind::Speaker => "--audio-out none",
        DeviceKind::Camera => "--video-in synth",
    };
    if available.is_empty() {
        format!("this machine has no {kind} (use {synth})")
    } else {
        format!(
            "{kind}s that exist: {} (or use {synth})",
            available.join(", ")
        )
    }
}

/// Every device this machine offers, by the names the CLI accepts.
#[derive(Clone, Debug, Default)]
pub struct DeviceList {
    /// Audio inputs (cpal device ids, e.g. `alsa:default`).
    pub microphones: Vec<String>,
    /// Audio outputs.
    pub speakers: Vec<String>,
    /// Cameras (`/dev/videoN (name)`).
    pub cameras: Vec<String>,
    /// Problems met while listing (no audio system, unreadable /dev...).
    pub problems: Vec<String>,
}

/// Lists microphones, speakers and cameras.
pub fn list() -> DeviceList {
    let mut out = DeviceList::default();
    match audio::list() {
        Ok((inputs, outputs)) => {
            out.microphones = inputs;
            out.speakers = outputs;
        }
        Err(e) => out.problems.push(format!("audio: {e}")),
    }
    match camera::list() {
        Ok(c) => out.cameras = c.into_iter().map(|c| c.label()).collect(),
        Err(e) => out.problems.push(format!("cameras: {e}")),
    }
    out
}

/// Whether `requested` names `id` (`alsa:hw:0`), its bare form (`hw:0`), or the
/// description (case-insensitive).
fn names(requested: &str, id: &str, description: &str) -> bool {
    let bare = id.split_once(':').map_or(id, |(_, rest)| rest);
    requested == id || requested == bare || requested.eq_ignore_ascii_case(description)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_device_names_the_ones_that_exist() {
        let e = DeviceError::NotFound {
            kind: DeviceKind::Microphone,
            requested: "hw:7".into(),
            available: vec!["alsa:null".into()],
        };
        assert_eq!(
            e.to_string(),
            "microphone \"hw:7\" is not available; microphones that exist: alsa:null (or use --audio-in synth)"
        );
        let e = DeviceError::NotFound {
            kind: DeviceKind::Camera,
            requested: "/dev/video0".into(),
            available: vec![],
        };
        assert_eq!(
            e.to_string(),
            "camera \"/dev/video0\" is not available; this machine has no camera (use --video-in synth)"
        );
    }

    #[test]
    fn devices_are_named_by_id_bare_id_or_description() {
        assert!(names("alsa:null", "alsa:null", "Discard all samples"));
        assert!(names("null", "alsa:null", "Discard all samples"));
        assert!(names(
            "discard all samples",
            "alsa:null",
            "Discard all samples"
        ));
        assert!(!names("nul", "alsa:null", "Discard all samples"));
    }

    #[test]
    fn listing_never_panics_without_devices() {
        let l = list();
        // This machine has no camera and no sound card; whatever it has is listed.
        for name in l.microphones.iter().chain(&l.speakers).chain(&l.cameras) {
            assert!(!name.is_empty());
        }
    }
}

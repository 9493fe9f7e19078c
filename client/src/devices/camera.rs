//! Cameras through nokhwa (V4L2 on Linux), converted to the I420 frames the encoder takes.
//!
//! nokhwa's camera is not `Send` and its `frame()` blocks without a timeout, so each camera
//! lives on its own thread and hands frames over a small channel (a full channel drops the
//! frame: the encoder wants the newest picture, not a backlog). We ask for YUYV or NV12,
//! which convert to I420 in a few lines; MJPEG would need a JPEG decoder we do not build.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
};
use sotto_media::synth::VideoFrame;

use super::{DeviceError, DeviceKind};

/// A camera as listed.
#[derive(Clone, Debug)]
pub struct CameraDesc {
    /// Its index (`/dev/videoN`).
    pub index: u32,
    /// Human name.
    pub name: String,
}

impl CameraDesc {
    /// `/dev/videoN (name)`, as `sotto devices` shows it.
    pub fn label(&self) -> String {
        format!("/dev/video{} ({})", self.index, self.name)
    }
}

/// Cameras on this machine.
pub fn list() -> Result<Vec<CameraDesc>, nokhwa::NokhwaError> {
    let mut cams: Vec<CameraDesc> = nokhwa::query(ApiBackend::Video4Linux)?
        .into_iter()
        .filter_map(|c| match c.index() {
            CameraIndex::Index(i) => Some(CameraDesc {
                index: *i,
                name: c.human_name(),
            }),
            CameraIndex::String(_) => None,
        })
        .collect();
    cams.sort_by_key(|c| c.index);
    Ok(cams)
}

fn available() -> Vec<String> {
    list()
        .map(|c| c.into_iter().map(|c| c.label()).collect())
        .unwrap_or_default()
}

/// Which camera `requested` names: `default` (the first), `N`, `/dev/videoN`, or its name.
fn find(requested: &str) -> Result<CameraDesc, DeviceError> {
    let cams = list().unwrap_or_default();
    let wanted = requested.strip_prefix("/dev/video").unwrap_or(requested);
    let found = if requested == "default" {
        cams.first().cloned()
    } else {
        cams.iter()
            .find(|c| {
                wanted.parse::<u32>().ok() == Some(c.index)
                    || c.name.eq_ignore_ascii_case(requested)
            })
            .cloned()
    };
    found.ok_or_else(|| DeviceError::NotFound {
        kind: DeviceKind::Camera,
        requested: requested.to_owned(),
        available: cams.iter().map(CameraDesc::label).collect(),
    })
}

/// A camera delivering I420 frames.
pub struct Camera {
    frames: mpsc::Receiver<VideoFrame>,
    stop: Arc<AtomicBool>,
    /// The format the camera agreed to.
    pub format: (usize, usize, u32),
}

impl Camera {
    /// Opens `requested` as close to `width`x`height` at `fps` as it offers in YUYV or NV12.
    pub fn open(
        requested: &str,
        width: usize,
        height: usize,
        fps: u32,
    ) -> Result<Self, DeviceError> {
        let desc = find(requested)?;
        let label = desc.label();
        let open_err = |reason: String| DeviceError::Open {
            kind: DeviceKind::Camera,
            name: label.clone(),
            reason,
            available: available(),
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        let (tx, rx) = mpsc::sync_channel(2);
        let stop = Arc::new(AtomicBool::new(false));
        let stop_thread = stop.clone();
        std::thread::Builder::new()
            .name("sotto-camera".into())
            .spawn(move || {
                let mut cam = match open_camera(desc.index, width, height, fps) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let fmt = cam.camera_format();
                let (w, h) = (
                    fmt.resolution().width() as usize,
                    fmt.resolution().height() as usize,
                );
                let _ = ready_tx.send(Ok((w, h, fmt.frame_rate(), fmt.format())));
                let mut id = 0u64;
                while !stop_thread.load(Ordering::Relaxed) {
                    let buf = match cam.frame() {
                        Ok(b) => b,
                        Err(e) => {
                            tracing::warn!(error = %e, "camera stopped");
                            break;
                        }
                    };
                    let captured = Instant::now();
                    let Some(i420) = to_i420(fmt.format(), buf.buffer(), w, h) else {
                        continue;
                    };
                    let frame = VideoFrame {
                        id,
                        captured,
                        width: w & !1,
                        height: h & !1,
                        i420,
                    };
                    id += 1;
                    if let Err(mpsc::TrySendError::Disconnected(_)) = tx.try_send(frame) {
                        break;
                    }
                }
            })
            .map_err(|e| open_err(e.to_string()))?;
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok((w, h, f, _))) => Ok(Self {
                frames: rx,
                stop,
                format: (w & !1, h & !1, f),
            }),
            Ok(Err(e)) => Err(open_err(e)),
            Err(_) => Err(open_err("it did not answer within 5 s".into())),
        }
    }

    /// Waits up to `timeout` for the next frame.
    pub fn next_frame(&self, timeout: Duration) -> Option<VideoFrame> {
        self.frames.recv_timeout(timeout).ok()
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn open_camera(
    index: u32,
    width: usize,
    height: usize,
    fps: u32,
) -> Result<nokhwa::Camera, String> {
    let formats = [FrameFormat::YUYV, FrameFormat::NV12];
    // Open with whatever YUYV/NV12 format comes first, then pick the closest mode ourselves
    // (nokhwa's own "closest" only works when the exact resolution exists).
    let request = RequestedFormat::with_formats(RequestedFormatType::None, &formats);
    let mut cam =
        nokhwa::Camera::with_backend(CameraIndex::Index(index), request, ApiBackend::Video4Linux)
            .map_err(|e| e.to_string())?;
    let best = cam
        .compatible_camera_formats()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|f| formats.contains(&f.format()))
        .min_by_key(|f| {
            let r = f.resolution();
            let area = (r.width() as i64 * r.height() as i64 - (width * height) as i64).abs();
            (area, (i64::from(f.frame_rate()) - i64::from(fps)).abs())
        });
    match best {
        Some(f) => {
            let exact = RequestedFormatType::Exact(CameraFormat::new(
                f.resolution(),
                f.format(),
                f.frame_rate(),
            ));
            cam.set_camera_requset(RequestedFormat::with_formats(exact, &formats))
                .map_err(|e| e.to_string())?;
        }
        None => {
            return Err(
                "it offers neither YUYV nor NV12 (MJPEG-only cameras are not supported)".into(),
            );
        }
    }
    cam.open_stream().map_err(|e| e.to_string())?;
    Ok(cam)
}

/// Converts one YUYV (4:2:2 packed) or NV12 (4:2:0, interleaved chroma) picture to I420,
/// cropping to even dimensions. `None` if the buffer is too short for the format.
pub fn to_i420(format: FrameFormat, data: &[u8], width: usize, height: usize) -> Option<Vec<u8>> {
    let (w, h) = (width & !1, height & !1);
    if w == 0 || h == 0 {
        return None;
    }
    let mut out = vec![0u8; w * h * 3 / 2];
    let (y_plane, chroma) = out.split_at_mut(w * h);
    let (u_plane, v_plane) = chroma.split_at_mut(w * h / 4);
    match format {
        FrameFormat::YUYV => {
            let stride = width * 2;
            if data.len() < stride * h {
                return None;
            }
            for row in 0..h {
                let line = &data[row * stride..row * stride + w * 2];
                for (x, px) in line.chunks_exact(4).enumerate() {
                    y_plane[row * w + 2 * x] = px[0];
                    y_plane[row * w + 2 * x + 1] = px[2];
                    if row % 2 == 0 {
                        // 4:2:2 → 4:2:0: chroma of the even row stands for the pair.
                        u_plane[(row / 2) * (w / 2) + x] = px[1];
                        v_plane[(row / 2) * (w / 2) + x] = px[3];
                    }
                }
            }
        }
        FrameFormat::NV12 => {
            if data.len() < width * height + width * (height / 2) {
                return None;
            }
            for row in 0..h {
                y_plane[row * w..row * w + w].copy_from_slice(&data[row * width..row * width + w]);
            }
            let uv = &data[width * height..];
            for row in 0..h / 2 {
                for x in 0..w / 2 {
                    u_plane[row * (w / 2) + x] = uv[row * width + 2 * x];
                    v_plane[row * (w / 2) + x] = uv[row * width + 2 * x + 1];
                }
            }
        }
        _ => return None,
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_converts_to_i420() {
        // 4x2: Y = 10,20,30,40 / 50,60,70,80; U/V per pair from the first row.
        let data = [
            10, 1, 20, 2, 30, 3, 40, 4, //
            50, 9, 60, 9, 70, 9, 80, 9,
        ];
        let i420 = to_i420(FrameFormat::YUYV, &data, 4, 2).expect("converts");
        assert_eq!(i420, vec![10, 20, 30, 40, 50, 60, 70, 80, 1, 3, 2, 4]);
    }

    #[test]
    fn nv12_converts_to_i420() {
        let mut data = vec![7u8; 4 * 2];
        data.extend_from_slice(&[1, 2, 3, 4]);
        let i420 = to_i420(FrameFormat::NV12, &data, 4, 2).expect("converts");
        assert_eq!(&i420[8..], &[1, 3, 2, 4]);
    }

    #[test]
    fn short_or_unknown_buffers_are_refused() {
        assert!(to_i420(FrameFormat::YUYV, &[0; 15], 4, 2).is_none());
        assert!(to_i420(FrameFormat::NV12, &[0; 11], 4, 2).is_none());
        assert!(to_i420(FrameFormat::MJPEG, &[0; 64], 4, 2).is_none());
        assert!(to_i420(FrameFormat::YUYV, &[0; 64], 1, 1).is_none());
    }

    #[test]
    fn a_missing_camera_names_the_ones_that_exist() {
        let Err(e) = Camera::open("/dev/video77", 640, 360, 30) else {
            panic!("opened a camera that does not exist");
        };
        let msg = e.to_string();
        assert!(
            msg.starts_with("camera \"/dev/video77\" is not available; "),
            "{msg}"
        );
        for name in available() {
            assert!(msg.contains(&name), "{msg} lists {name}");
        }
    }
}

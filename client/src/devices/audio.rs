//! Microphones and speakers through cpal (ALSA on Linux): 48 kHz, mono to the codec.
//!
//! Capture runs in cpal's callback thread, which must never block: it downmixes to mono
//! i16, cuts frames of the call's frame length and hands them over a bounded channel (a
//! full channel drops the frame, as a late audio thread would). Playout pulls from a
//! bounded queue the call fills; an empty queue plays silence.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use cpal::{
    FromSample, Sample, SampleFormat, SizedSample, StreamConfig,
    traits::{DeviceTrait, HostTrait, StreamTrait},
};

use super::{DeviceError, DeviceKind, names};

/// The call's sample rate.
pub const RATE: u32 = 48_000;
/// Playout queue bound: 200 ms. Older audio is dropped rather than delayed further.
const MAX_QUEUED: usize = RATE as usize / 5;

/// While alive, alsa-lib's messages on this thread go to a buffer instead of stderr (a
/// missing card makes it print several lines that the error we return already explains).
struct QuietAlsa {
    #[cfg(target_os = "linux")]
    _buffer: Option<std::rc::Rc<std::cell::RefCell<alsa::Output>>>,
}

fn quiet_alsa() -> QuietAlsa {
    QuietAlsa {
        #[cfg(target_os = "linux")]
        _buffer: alsa::Output::local_error_handler().ok(),
    }
}

fn host() -> Result<cpal::Host, cpal::Error> {
    #[cfg(target_os = "linux")]
    {
        // `default_host` panics when ALSA's configuration cannot load; this returns it.
        cpal::host_from_id(cpal::HostId::Alsa)
    }
    #[cfg(not(target_os = "linux"))]
    {
        Ok(cpal::default_host())
    }
}

fn id_of(d: &cpal::Device) -> String {
    d.id().map_or_else(|_| d.to_string(), |id| id.to_string())
}

/// Whether `id` is ALSA's `null` device: it discards playout and captures zeros with no
/// clock (a read loop returns ~455 M frames/s), so a stream on it would spin a core.
pub fn is_clockless(id: &str) -> bool {
    id.rsplit(':').next() == Some("null")
}

/// Microphones and speakers, by cpal device id (`alsa:default`, `alsa:hw:CARD=0,DEV=0`).
pub fn list() -> Result<(Vec<String>, Vec<String>), cpal::Error> {
    let _quiet = quiet_alsa();
    let host = host()?;
    let inputs = host.input_devices()?.map(|d| id_of(&d)).collect();
    let outputs = host.output_devices()?.map(|d| id_of(&d)).collect();
    Ok((inputs, outputs))
}

fn available(kind: DeviceKind) -> Vec<String> {
    match list() {
        Ok((i, o)) => match kind {
            DeviceKind::Speaker => o,
            _ => i,
        },
        Err(_) => Vec::new(),
    }
}

fn open_err(kind: DeviceKind, name: &str, reason: impl ToString) -> DeviceError {
    DeviceError::Open {
        kind,
        name: name.to_owned(),
        reason: reason.to_string().trim_end_matches('.').to_owned(),
        available: available(kind),
    }
}

/// Finds the device `requested` names (`default`, an id, a bare id or a description).
fn find(kind: DeviceKind, requested: &str) -> Result<cpal::Device, DeviceError> {
    let _quiet = quiet_alsa();
    let host = host().map_err(|e| open_err(kind, requested, e))?;
    let output = kind == DeviceKind::Speaker;
    if requested == "default" {
        let d = if output {
            host.default_output_device()
        } else {
            host.default_input_device()
        };
        return d.ok_or_else(|| DeviceError::NotFound {
            kind,
            requested: requested.to_owned(),
            available: available(kind),
        });
    }
    let devices = if output {
        host.output_devices().map(|d| d.collect::<Vec<_>>())
    } else {
        host.input_devices().map(|d| d.collect::<Vec<_>>())
    }
    .map_err(|e| open_err(kind, requested, e))?;
    let found = devices.into_iter().find(|d| {
        let description = d
            .description()
            .map(|x| x.name().to_owned())
            .unwrap_or_default();
        names(requested, &id_of(d), &description)
    });
    let Some(device) = found else {
        return Err(DeviceError::NotFound {
            kind,
            requested: requested.to_owned(),
            available: available(kind),
        });
    };
    if is_clockless(&id_of(&device)) {
        return Err(open_err(
            kind,
            requested,
            "ALSA's null device discards audio and has no clock",
        ));
    }
    Ok(device)
}

/// The device `name` names and its best 48 kHz configuration: mono if offered, i16, f32
/// or i32 samples.
fn configure(
    kind: DeviceKind,
    name: &str,
) -> Result<(cpal::Device, StreamConfig, SampleFormat), DeviceError> {
    let device = find(kind, name)?;
    let ranges: Vec<_> = if kind == DeviceKind::Speaker {
        device.supported_output_configs().map(|r| r.collect())
    } else {
        device.supported_input_configs().map(|r| r.collect())
    }
    .map_err(|e| open_err(kind, name, e))?;
    let rank = |f: SampleFormat| match f {
        SampleFormat::I16 => Some(0),
        SampleFormat::F32 => Some(1),
        SampleFormat::I32 => Some(2),
        _ => None,
    };
    let (config, format) = ranges
        .into_iter()
        .filter_map(|r| {
            let fmt_rank = rank(r.sample_format())?;
            let c = r.try_with_sample_rate(RATE)?;
            Some(((c.channels() != 1, fmt_rank), c))
        })
        .min_by_key(|(k, _)| *k)
        .map(|(_, c)| (c.config(), c.sample_format()))
        .ok_or_else(|| {
            open_err(
                kind,
                name,
                "it offers no 48 kHz configuration with 16-bit, 32-bit or float samples",
            )
        })?;
    Ok((device, config, format))
}

/// One captured frame.
#[derive(Clone, Debug)]
pub struct CapturedFrame {
    /// Mono samples at 48 kHz, one frame's worth.
    pub samples: Vec<i16>,
    /// When its last sample was captured (callback time).
    pub captured: Instant,
}

/// A microphone delivering frames of the call's length. Its callback hands each frame
/// over as it fills, so the call sends it then, not at the next tick of a timer.
pub struct Microphone {
    _stream: cpal::Stream,
    frames: tokio::sync::mpsc::Receiver<CapturedFrame>,
    /// Frames dropped because the call did not take them in time.
    pub dropped: Arc<AtomicU64>,
}

impl Microphone {
    /// Opens `name` for capture in frames of `frame_ms` milliseconds.
    pub fn open(name: &str, frame_ms: u32) -> Result<Self, DeviceError> {
        let kind = DeviceKind::Microphone;
        let _quiet = quiet_alsa();
        let (device, config, format) = configure(kind, name)?;
        let frame = (RATE / 1000 * frame_ms) as usize;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let dropped = Arc::new(AtomicU64::new(0));
        let stream = match format {
            SampleFormat::I16 => capture::<i16>(&device, &config, frame, tx, dropped.clone()),
            SampleFormat::F32 => capture::<f32>(&device, &config, frame, tx, dropped.clone()),
            _ => capture::<i32>(&device, &config, frame, tx, dropped.clone()),
        }
        .map_err(|e| open_err(kind, name, e))?;
        stream.play().map_err(|e| open_err(kind, name, e))?;
        Ok(Self {
            _stream: stream,
            frames: rx,
            dropped,
        })
    }

    /// The next captured frame, as soon as the device has filled it; `None` once the
    /// stream has stopped.
    pub async fn next_frame(&mut self) -> Option<CapturedFrame> {
        self.frames.recv().await
    }
}

fn capture<T>(
    device: &cpal::Device,
    config: &StreamConfig,
    frame: usize,
    tx: tokio::sync::mpsc::Sender<CapturedFrame>,
    dropped: Arc<AtomicU64>,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample,
    i16: FromSample<T>,
{
    let channels = usize::from(config.channels.max(1));
    let mut pending: Vec<i16> = Vec::with_capacity(frame * 2);
    device.build_input_stream::<T, _, _>(
        *config,
        move |data: &[T], _| {
            for chunk in data.chunks(channels) {
                let sum: i32 = chunk.iter().map(|s| i32::from(i16::from_sample(*s))).sum();
                pending.push((sum / channels as i32) as i16);
                if pending.len() == frame {
                    let f = CapturedFrame {
                        samples: std::mem::replace(&mut pending, Vec::with_capacity(frame)),
                        captured: Instant::now(),
                    };
                    if tx.try_send(f).is_err() {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        },
        |e| tracing::warn!(error = %e, "microphone"),
        None,
    )
}

/// A speaker playing what the call decodes.
pub struct Speaker {
    _stream: cpal::Stream,
    queue: Arc<Mutex<VecDeque<i16>>>,
    /// Output callbacks that found the queue short (played silence).
    pub underruns: Arc<AtomicU64>,
}

impl Speaker {
    /// Opens `name` for playout.
    pub fn open(name: &str) -> Result<Self, DeviceError> {
        let kind = DeviceKind::Speaker;
        let _quiet = quiet_alsa();
        let (device, config, format) = configure(kind, name)?;
        let queue = Arc::new(Mutex::new(VecDeque::with_capacity(MAX_QUEUED)));
        let underruns = Arc::new(AtomicU64::new(0));
        let (q, u) = (queue.clone(), underruns.clone());
        let stream = match format {
            SampleFormat::I16 => playout::<i16>(&device, &config, q, u),
            SampleFormat::F32 => playout::<f32>(&device, &config, q, u),
            _ => playout::<i32>(&device, &config, q, u),
        }
        .map_err(|e| open_err(kind, name, e))?;
        stream.play().map_err(|e| open_err(kind, name, e))?;
        Ok(Self {
            _stream: stream,
            queue,
            underruns,
        })
    }

    /// Queues decoded mono samples for playout.
    pub fn play(&self, pcm: &[i16]) {
        push_bounded(&self.queue, pcm);
    }
}

/// What a device-clocked speaker asks for: fill the slice with mono samples due now.
pub type PullAudio = Box<dyn FnMut(&mut [i16]) + Send + 'static>;

/// A speaker whose callback pulls what it plays (a room's mixer), so playout follows the
/// device's clock rather than the network's.
pub struct PulledSpeaker {
    _stream: cpal::Stream,
}

impl PulledSpeaker {
    /// Opens `name` for playout, calling `pull` from the device's callback.
    pub fn open(name: &str, pull: PullAudio) -> Result<Self, DeviceError> {
        let kind = DeviceKind::Speaker;
        let _quiet = quiet_alsa();
        let (device, config, format) = configure(kind, name)?;
        let stream = match format {
            SampleFormat::I16 => pulled::<i16>(&device, &config, pull),
            SampleFormat::F32 => pulled::<f32>(&device, &config, pull),
            _ => pulled::<i32>(&device, &config, pull),
        }
        .map_err(|e| open_err(kind, name, e))?;
        stream.play().map_err(|e| open_err(kind, name, e))?;
        Ok(Self { _stream: stream })
    }
}

fn pulled<T>(
    device: &cpal::Device,
    config: &StreamConfig,
    mut pull: PullAudio,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample + FromSample<i16>,
{
    let channels = usize::from(config.channels.max(1));
    let mut mono: Vec<i16> = Vec::new();
    device.build_output_stream::<T, _, _>(
        *config,
        move |out: &mut [T], _| {
            mono.resize(out.len() / channels, 0);
            pull(&mut mono);
            for (frame, s) in out.chunks_mut(channels).zip(&mono) {
                for o in frame {
                    *o = T::from_sample(*s);
                }
            }
        },
        |e| tracing::warn!(error = %e, "speaker"),
        None,
    )
}

/// Appends `pcm`, dropping the oldest samples beyond [`MAX_QUEUED`].
fn push_bounded(queue: &Mutex<VecDeque<i16>>, pcm: &[i16]) {
    // A poisoned lock means the audio thread panicked; playing nothing is all that is left.
    if let Ok(mut q) = queue.lock() {
        q.extend(pcm.iter().copied());
        let excess = q.len().saturating_sub(MAX_QUEUED);
        q.drain(..excess);
    }
}

fn playout<T>(
    device: &cpal::Device,
    config: &StreamConfig,
    queue: Arc<Mutex<VecDeque<i16>>>,
    underruns: Arc<AtomicU64>,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample + FromSample<i16>,
{
    let channels = usize::from(config.channels.max(1));
    device.build_output_stream::<T, _, _>(
        *config,
        move |out: &mut [T], _| {
            let mut q = match queue.lock() {
                Ok(q) => q,
                Err(_) => return,
            };
            let mut short = false;
            for frame in out.chunks_mut(channels) {
                let s = q.pop_front().unwrap_or_else(|| {
                    short = true;
                    0
                });
                for o in frame {
                    *o = T::from_sample(s);
                }
            }
            if short {
                underruns.fetch_add(1, Ordering::Relaxed);
            }
        },
        |e| tracing::warn!(error = %e, "speaker"),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playout_queue_keeps_only_the_newest_200_ms() {
        let q = Mutex::new(VecDeque::new());
        push_bounded(&q, &vec![1; MAX_QUEUED]);
        push_bounded(&q, &[2; 480]);
        let q = q.lock().expect("lock");
        assert_eq!(q.len(), MAX_QUEUED);
        assert_eq!(q.back(), Some(&2));
        assert_eq!(q.iter().filter(|s| **s == 2).count(), 480);
    }

    #[test]
    fn a_missing_microphone_is_an_error_naming_what_exists() {
        let Err(e) = Microphone::open("no-such-microphone", 20) else {
            panic!("opened a microphone that does not exist");
        };
        let msg = e.to_string();
        assert!(
            msg.contains("\"no-such-microphone\" is not available"),
            "{msg}"
        );
        for name in available(DeviceKind::Microphone) {
            assert!(msg.contains(&name), "{msg} lists {name}");
        }
    }

    #[test]
    fn the_clockless_null_device_is_refused() {
        if !available(DeviceKind::Speaker)
            .iter()
            .any(|d| d == "alsa:null")
        {
            return; // A machine whose ALSA has no null device: nothing to refuse.
        }
        let Err(e) = Speaker::open("null") else {
            panic!("opened ALSA's null device");
        };
        assert!(e.to_string().contains("no clock"), "{e}");
    }
}

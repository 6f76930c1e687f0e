//! Video decoding: a video file (through FFmpeg's libraries; without the `ffmpeg` feature, MP4
//! with H.264 only), an animated GIF or a directory of numbered frames into RGB frames, indexed
//! and timed as transformers' PyAV loader (`read_video_pyav`) sees them.
//!
//! Frame `i` is the i-th frame in display (presentation) order, as PyAV's
//! `container.decode(video=0)` yields them. Readers decode sequentially and keep only the
//! requested frames, each passed through the caller's [`FrameMap`] (turned upright, shrunk to
//! the size the processor resizes to) as it is decoded, so a long or large clip is never held
//! in memory whole.
//!
//! One file per job: `ffmpeg` (FFmpeg's demuxers and decoders, PyAV's RGB conversion), the
//! cargo-only fallback `mp4` (+ `mp4_index` for the sample table and timing, `sps` and `h264`
//! for openh264, `yuv` for PyAV's YUV → RGB), `gif`, `frames` (numbered image files) and
//! `orient` (the display rotation).

#[cfg(feature = "ffmpeg")]
mod ffmpeg;
mod frames;
mod gif;
mod orient;
mod yuv;
// The cargo-only fallback: compiled in every build so it cannot rot, used without `ffmpeg`.
#[cfg_attr(feature = "ffmpeg", allow(dead_code))]
mod h264;
#[cfg_attr(feature = "ffmpeg", allow(dead_code))]
mod mp4;
#[cfg_attr(feature = "ffmpeg", allow(dead_code))]
mod mp4_index;
#[cfg_attr(feature = "ffmpeg", allow(dead_code))]
mod sps;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use image::RgbImage;

pub use orient::VideoRotation;
pub use yuv::{yuv420_to_rgb, ColorInfo, Yuv420};

/// What a reader does to each requested frame as soon as it is decoded.
pub type FrameMap<'a> = &'a dyn Fn(RgbImage) -> RgbImage;

/// The kind of input a reader decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoFormat {
    Mp4H264,
    /// Any container and codec FFmpeg's libraries read.
    Ffmpeg,
    Gif,
    FrameDir,
}

impl fmt::Display for VideoFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VideoFormat::Mp4H264 => "MP4 (H.264)",
            VideoFormat::Ffmpeg => "video (FFmpeg)",
            VideoFormat::Gif => "GIF",
            VideoFormat::FrameDir => "frame directory",
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VideoMetadata {
    pub total_frames: usize,
    /// Average frame rate from the container (mp4: sample count × timescale / Σ stts durations,
    /// what FFmpeg reports as `avg_frame_rate` and transformers' PyAV loader uses; gif: frames
    /// over the summed delays); None when unknown.
    pub fps: Option<f64>,
    pub width: usize,
    pub height: usize,
    /// The container's duration (mp4: the edit list's or the track's mdhd, as FFmpeg reports the
    /// stream's; gif: the summed delays).
    pub duration_s: Option<f64>,
    /// Presentation time in seconds of every frame, in display order, from the container
    /// (mp4: stts + ctts and a simple edit list; gif: cumulative delays; FFmpeg: the packets'
    /// times where the frames had to be counted, else None until [`VideoReader::frame_times`]);
    /// None for frame dirs.
    pub frame_times: Option<Vec<f64>>,
    pub format: VideoFormat,
    /// The container's display rotation (FFmpeg only); `width` and `height` are the coded
    /// picture's, as PyAV reports them.
    pub rotation: VideoRotation,
}

pub trait VideoReader: Send {
    fn metadata(&self) -> &VideoMetadata;

    /// Decodes the frames at `indices` (display-order indices < total_frames; ascending in the
    /// usual case, though any order and repeats are accepted) and returns them as RGB in that
    /// order, each passed through `map` as it is decoded. Decodes sequentially and keeps only
    /// the requested frames. `progress(done, total)` is called as frames are decoded: `total` is
    /// the number of frames that must be decoded to reach the requested ones.
    fn read_frames_mapped(
        &mut self,
        indices: &[usize],
        map: FrameMap<'_>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<RgbImage>, VideoError>;

    /// [`read_frames_mapped`](Self::read_frames_mapped) keeping the decoded frames as they are.
    fn read_frames(
        &mut self,
        indices: &[usize],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<RgbImage>, VideoError> {
        self.read_frames_mapped(indices, &|f| f, progress)
    }

    /// Presentation time in seconds of every frame in display order, where the input has them;
    /// may read the file once more.
    fn frame_times(&mut self) -> Result<Option<Vec<f64>>, VideoError> {
        Ok(self.metadata().frame_times.clone())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: not a video this decoder reads ({reason}); expected a video file, an animated GIF or a directory of numbered PNG/JPEG frames", path.display())]
    UnknownFormat { path: PathBuf, reason: String },
    #[error("{}: not supported yet: {what}", path.display())]
    Unsupported { path: PathBuf, what: String },
    #[error("{}: malformed video: {msg}", path.display())]
    Malformed { path: PathBuf, msg: String },
    #[error("{}: {msg}", path.display())]
    Decode { path: PathBuf, msg: String },
    /// A frame file of a frame directory could not be read (the message names the file).
    #[error(transparent)]
    Frame(#[from] crate::preprocess::PreprocessError),
    #[error("{}: frame index {index} is out of range: the video has {total} frames", path.display())]
    IndexOutOfRange {
        path: PathBuf,
        index: usize,
        total: usize,
    },
}

/// Opens a video: a directory is read as numbered frames; a file by its content, whatever its
/// extension: `GIF8` is a GIF; anything else FFmpeg reads (without the `ffmpeg` feature: an
/// `ftyp` box, MP4 with H.264).
pub fn open_video(path: &Path) -> Result<Box<dyn VideoReader>, VideoError> {
    let io = |error| VideoError::Io {
        path: path.to_path_buf(),
        error,
    };
    if std::fs::metadata(path).map_err(io)?.is_dir() {
        return Ok(Box::new(frames::FrameDir::open(path)?));
    }
    // Only a regular file is opened: a named pipe would block, a device would never end. MP4s
    // are read piecewise, so their size is not bounded here (a GIF's is, where it is read whole).
    let what = "a video: a video file, an animated GIF or a directory of numbered frames";
    vl3c_frontends::limits::check_file(path, u64::MAX, what).map_err(io)?;
    let mut head = Vec::with_capacity(16);
    std::fs::File::open(path)
        .map_err(io)?
        .take(16)
        .read_to_end(&mut head)
        .map_err(io)?;
    match sniff(&head) {
        Sniffed::Gif => Ok(Box::new(gif::GifVideo::open(path)?)),
        #[cfg(feature = "ffmpeg")]
        Sniffed::Mp4 | Sniffed::Container(_) => {
            Ok(Box::new(ffmpeg::FfmpegVideo::open(path, true)?))
        }
        #[cfg(feature = "ffmpeg")]
        Sniffed::Unknown(reason) if reason == NO_SIGNATURE => {
            Ok(Box::new(ffmpeg::FfmpegVideo::open(path, false)?))
        }
        #[cfg(not(feature = "ffmpeg"))]
        Sniffed::Mp4 => Ok(Box::new(mp4::Mp4Video::open(path)?)),
        #[cfg(not(feature = "ffmpeg"))]
        Sniffed::Container(what) => Err(VideoError::Unsupported {
            path: path.to_path_buf(),
            what: format!("{what} (vl3c was built without FFmpeg)"),
        }),
        Sniffed::Unsupported(what) => Err(VideoError::Unsupported {
            path: path.to_path_buf(),
            what: what.into(),
        }),
        Sniffed::Unknown(reason) => Err(VideoError::UnknownFormat {
            path: path.to_path_buf(),
            reason: reason.into(),
        }),
    }
}

enum Sniffed {
    Mp4,
    /// A container only FFmpeg reads.
    Container(#[cfg_attr(feature = "ffmpeg", allow(dead_code))] &'static str),
    Gif,
    Unsupported(&'static str),
    Unknown(&'static str),
}

const NO_SIGNATURE: &str = "no known signature";

fn sniff(head: &[u8]) -> Sniffed {
    match head {
        [] => Sniffed::Unknown("the file is empty"),
        [_, _, _, _, b'f', b't', b'y', b'p', ..] => Sniffed::Mp4,
        // QuickTime files written before `ftyp` existed start with one of these atoms.
        [_, _, _, _, b'm', b'o', b'o', b'v', ..]
        | [_, _, _, _, b'm', b'd', b'a', b't', ..]
        | [_, _, _, _, b'w', b'i', b'd', b'e', ..]
        | [_, _, _, _, b'f', b'r', b'e', b'e', ..] => Sniffed::Container("QuickTime container"),
        [b'G', b'I', b'F', b'8', ..] => Sniffed::Gif,
        [0x1A, 0x45, 0xDF, 0xA3, ..] => Sniffed::Container("Matroska/WebM container"),
        [b'R', b'I', b'F', b'F', _, _, _, _, b'A', b'V', b'I', b' ', ..] => {
            Sniffed::Container("AVI container")
        }
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => {
            Sniffed::Unsupported("animated WebP")
        }
        [0x89, b'P', b'N', b'G', ..] | [0xFF, 0xD8, 0xFF, ..] => Sniffed::Unknown(
            "a single still image; pass it as an image, or put numbered frames in a directory",
        ),
        _ => Sniffed::Unknown(NO_SIGNATURE),
    }
}

/// Every index must name a frame.
fn check_indices(path: &Path, indices: &[usize], total: usize) -> Result<(), VideoError> {
    match indices.iter().find(|&&i| i >= total) {
        Some(&index) => Err(VideoError::IndexOutOfRange {
            path: path.to_path_buf(),
            index,
            total,
        }),
        None => Ok(()),
    }
}

/// Requested frame index → the frame once decoded.
type Slots = BTreeMap<usize, Option<RgbImage>>;

/// The requested frames' slots, to fill in decoding order, and the last index to decode; None
/// when nothing is requested. Every index must name a frame.
fn requested(
    path: &Path,
    indices: &[usize],
    total: usize,
) -> Result<Option<(usize, Slots)>, VideoError> {
    check_indices(path, indices, total)?;
    Ok(indices
        .iter()
        .max()
        .map(|&last| (last, indices.iter().map(|&i| (i, None)).collect())))
}

/// The decoded frames in the order `indices` asked for them (a repeated index gets copies).
fn in_request_order(
    indices: &[usize],
    mut frames: BTreeMap<usize, Option<RgbImage>>,
) -> Vec<RgbImage> {
    let last_use: BTreeMap<usize, usize> = indices
        .iter()
        .enumerate()
        .map(|(pos, &i)| (i, pos))
        .collect();
    indices
        .iter()
        .enumerate()
        .map(|(pos, i)| {
            let slot = frames.get_mut(i).expect("every requested index has a slot");
            if last_use[i] == pos {
                slot.take()
            } else {
                slot.clone()
            }
            .expect("every requested frame was decoded")
        })
        .collect()
}

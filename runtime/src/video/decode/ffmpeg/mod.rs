//! Every container and codec FFmpeg's libraries read (MP4 plain or fragmented, QuickTime,
//! Matroska, WebM, AVI, …; H.264 in all its profiles, HEVC, AV1, VP9, MPEG-4 Part 2, …), read
//! as transformers' PyAV loader reads them: the same libraries, the first video stream, frames
//! in the order `container.decode(video=0)` yields them (display order), `streams.video[0]
//! .frames` and `.average_rate` as the frame count and rate, and `rgb` for PyAV's RGB24
//! conversion (`yuv10` for 10-bit 4:2:0, where the system's libswscale differs from PyAV's).
//!
//! Where the container states no frame count (Matroska, WebM, fragmented MP4: PyAV says 0 and
//! transformers' `load_video` then fails) the frames are counted by reading the stream's packets
//! once (`scan`), without decoding them.

mod rgb;
mod scan;
mod yuv10;

use std::path::{Path, PathBuf};
use std::sync::Once;

use ff::codec::packet::side_data::Type as SideDataType;
use ff::format::stream::Disposition;
use ff::media::Type as Media;
use ffmpeg_next as ff;
use image::RgbImage;

use super::{in_request_order, requested, FrameMap, VideoError, VideoFormat, VideoMetadata};
use super::{VideoReader, VideoRotation};
use rgb::ToRgb;

pub struct FfmpegVideo {
    path: PathBuf,
    meta: VideoMetadata,
    /// The index of PyAV's `streams.video[0]`.
    stream: usize,
    /// Presentation time of every frame in display order, once a scan has read them.
    times: Option<Vec<f64>>,
}

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // Fills ffmpeg-next's table of error texts, which its errors print.
        let _ = ff::init();
        // Errors reach the user as one line of ours; FFmpeg's own log would add lines to stderr
        // for every damaged packet it conceals.
        ff::util::log::set_level(ff::util::log::Level::Quiet);
    });
}

impl FfmpegVideo {
    /// Opens `path` with FFmpeg. `recognised`: the file starts with a signature of a video
    /// container, so a file FFmpeg cannot open is malformed rather than of an unknown kind.
    pub fn open(path: &Path, recognised: bool) -> Result<Self, VideoError> {
        init();
        let input = open_input(path, recognised)?;
        let malformed = |msg: String| VideoError::Malformed {
            path: path.to_path_buf(),
            msg,
        };
        let stream = input
            .streams()
            .find(|s| {
                s.parameters().medium() == Media::Video
                    && !s.disposition().contains(Disposition::ATTACHED_PIC)
            })
            .ok_or_else(|| malformed("the file has no video track".into()))?;
        let index = stream.index();
        let params = stream.parameters();
        // SAFETY: the parameters belong to the open input, alive for this borrow.
        let (width, height, codec_id) = unsafe {
            let p = &*params.as_ptr();
            (p.width, p.height, p.codec_id)
        };
        if ff::codec::decoder::find(codec_id.into()).is_none() {
            return Err(VideoError::Unsupported {
                path: path.to_path_buf(),
                what: format!(
                    "{:?} video: this FFmpeg has no decoder for it",
                    ff::codec::Id::from(codec_id)
                ),
            });
        }
        if width <= 0 || height <= 0 {
            return Err(malformed(format!(
                "the video stream declares no picture size ({width}x{height})"
            )));
        }
        let rate = stream.avg_frame_rate();
        let fps = (rate.numerator() > 0 && rate.denominator() > 0).then(|| f64::from(rate));
        let tb = f64::from(stream.time_base());
        let duration_s = match stream.duration() {
            d if d > 0 => Some(d as f64 * tb),
            _ if input.duration() > 0 => {
                Some(input.duration() as f64 / ff::ffi::AV_TIME_BASE as f64)
            }
            _ => None,
        };
        let rotation = display_rotation(&stream);
        let declared = stream.frames();
        drop(input);
        let mut video = FfmpegVideo {
            path: path.to_path_buf(),
            meta: VideoMetadata {
                total_frames: declared.max(0) as usize,
                fps,
                width: width as usize,
                height: height as usize,
                duration_s,
                frame_times: None,
                format: VideoFormat::Ffmpeg,
                rotation,
            },
            stream: index,
            times: None,
        };
        if declared <= 0 {
            let times = video.scan()?;
            video.meta.total_frames = times.len();
            video.meta.frame_times = Some(times);
        }
        if video.meta.total_frames == 0 {
            return Err(malformed("the video stream has no frames".into()));
        }
        Ok(video)
    }

    fn scan(&mut self) -> Result<Vec<f64>, VideoError> {
        if let Some(t) = &self.times {
            return Ok(t.clone());
        }
        let mut input = open_input(&self.path, true)?;
        let times = scan::frame_times(&mut input, self.stream).map_err(|msg| self.error(msg))?;
        self.times = Some(times.clone());
        Ok(times)
    }

    fn error(&self, msg: String) -> VideoError {
        VideoError::Decode {
            path: self.path.clone(),
            msg,
        }
    }
}

fn open_input(path: &Path, recognised: bool) -> Result<ff::format::context::Input, VideoError> {
    ff::format::input(path).map_err(|e| {
        if recognised {
            VideoError::Malformed {
                path: path.to_path_buf(),
                msg: format!("FFmpeg cannot read the container: {e}"),
            }
        } else {
            VideoError::UnknownFormat {
                path: path.to_path_buf(),
                reason: format!("FFmpeg recognises no container in it: {e}"),
            }
        }
    })
}

/// The display matrix's counter-clockwise rotation, to the nearest quarter turn.
fn display_rotation(stream: &ff::format::stream::Stream) -> VideoRotation {
    let Some(matrix) = stream
        .side_data()
        .find(|d| d.kind() == SideDataType::DisplayMatrix)
        .map(|d| d.data().to_vec())
        .filter(|d| d.len() >= 36)
    else {
        return VideoRotation::default();
    };
    let m: Vec<i32> = matrix
        .chunks_exact(4)
        .take(9)
        .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
        .collect();
    // SAFETY: m holds the 9 entries av_display_rotation_get reads.
    let degrees = unsafe { ff::ffi::av_display_rotation_get(m.as_ptr()) };
    VideoRotation::from_degrees(degrees)
}

impl VideoReader for FfmpegVideo {
    fn metadata(&self) -> &VideoMetadata {
        &self.meta
    }

    fn frame_times(&mut self) -> Result<Option<Vec<f64>>, VideoError> {
        self.scan().map(Some)
    }

    fn read_frames_mapped(
        &mut self,
        indices: &[usize],
        map: FrameMap<'_>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<RgbImage>, VideoError> {
        let Some((last, mut wanted)) = requested(&self.path, indices, self.meta.total_frames)?
        else {
            return Ok(Vec::new());
        };
        let mut input = open_input(&self.path, true)?;
        let stream = input.stream(self.stream).expect("the stream found at open");
        let mut ctx = ff::codec::context::Context::from_parameters(stream.parameters())
            .map_err(|e| self.error(format!("cannot set up the decoder: {e}")))?;
        // The machine's threads, both ways FFmpeg parallelises; the output does not depend on
        // them.
        // SAFETY: the context is not opened yet.
        unsafe {
            let c = &mut *ctx.as_mut_ptr();
            c.thread_count = 0;
            c.thread_type = ff::ffi::FF_THREAD_FRAME | ff::ffi::FF_THREAD_SLICE;
        }
        let mut decoder = ctx
            .decoder()
            .video()
            .map_err(|e| self.error(format!("cannot open the decoder: {e}")))?;
        let (w, h) = (self.meta.width as u32, self.meta.height as u32);
        let mut to_rgb = ToRgb::new();
        let mut frame = ff::util::frame::video::Video::empty();
        let mut next = 0usize;
        let mut receive = |decoder: &mut ff::decoder::Video| -> Result<bool, VideoError> {
            while decoder.receive_frame(&mut frame).is_ok() {
                if let Some(slot) = wanted.get_mut(&next) {
                    if (frame.width(), frame.height()) != (w, h) {
                        return Err(self.error(format!(
                            "frame {next} is {}x{}, the stream is {w}x{h}: the frames of one video must share a size",
                            frame.width(),
                            frame.height()
                        )));
                    }
                    let rgb = to_rgb
                        .convert(&frame)
                        .map_err(|m| self.error(format!("frame {next}: {m}")))?;
                    *slot = Some(map(rgb));
                }
                next += 1;
                progress(next.min(last + 1), last + 1);
                if next > last {
                    return Ok(true);
                }
            }
            Ok(false)
        };
        let mut packet = ff::Packet::empty();
        let mut done = false;
        while !done {
            match packet.read(&mut input) {
                Ok(()) => {}
                Err(ff::Error::Eof) => break,
                Err(e) => return Err(self.error(format!("cannot read a packet: {e}"))),
            }
            if packet.stream() != self.stream {
                continue;
            }
            if let Err(e) = decoder.send_packet(&packet) {
                return Err(self.error(format!("decoding failed after frame {next}: {e}")));
            }
            done = receive(&mut decoder)?;
        }
        if !done {
            let _ = decoder.send_eof();
            receive(&mut decoder)?;
        }
        if let Some((&i, _)) = wanted.iter().find(|(_, f)| f.is_none()) {
            return Err(self.error(format!(
                "the stream ended after {next} decoded frames, before frame {i} (the container declares {})",
                self.meta.total_frames
            )));
        }
        Ok(in_request_order(indices, wanted))
    }
}

//! Animated GIFs. The `image` crate decodes and composites the frames (disposal methods,
//! sub-rectangles); the frame count and timing come from a walk over the GIF blocks at open,
//! which costs no LZW decoding. Delays are FFmpeg's (what PyAV reports, measured with PyAV 18 /
//! FFmpeg 8): a delay of 0 plays as the 10/100 s default, 1/100 s stays 1/100 s, and a frame
//! without a graphic control extension keeps the previous frame's delay (10/100 s before any).
//!
//! PyAV's `average_rate` for a GIF is an estimate of FFmpeg's stream probing (it skips the first
//! two frames' delays, among other rules); `fps` here is the plain frames / Σ delays.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use image::codecs::gif::GifDecoder;
use image::{AnimationDecoder, ImageDecoder, RgbImage};

use super::{
    in_request_order, requested, FrameMap, VideoError, VideoFormat, VideoMetadata, VideoReader,
    VideoRotation,
};

/// In 1/100 s: what FFmpeg plays for a delay of 0 or before any graphic control extension.
const DEFAULT_DELAY: u16 = 10;

pub struct GifVideo {
    path: PathBuf,
    bytes: Vec<u8>,
    meta: VideoMetadata,
}

impl GifVideo {
    pub fn open(path: &Path) -> Result<Self, VideoError> {
        let bytes = vl3c_frontends::limits::read_bounded(
            path,
            vl3c_frontends::limits::MAX_GIF_BYTES,
            "an animated GIF",
        )
        .map_err(|error| VideoError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        let malformed = |msg: String| VideoError::Malformed {
            path: path.to_path_buf(),
            msg,
        };
        let layout = scan(&bytes).map_err(malformed)?;
        if layout.delays.is_empty() {
            return Err(malformed("the GIF has no frames".into()));
        }
        let mut t = 0u64;
        let frame_times: Vec<f64> = layout
            .delays
            .iter()
            .map(|&d| {
                let start = t as f64 / 100.0;
                t += u64::from(d);
                start
            })
            .collect();
        let total = t as f64 / 100.0;
        let n = frame_times.len();
        let meta = VideoMetadata {
            total_frames: n,
            fps: (total > 0.0).then(|| n as f64 / total),
            width: layout.width,
            height: layout.height,
            duration_s: Some(total),
            frame_times: Some(frame_times),
            format: VideoFormat::Gif,
            rotation: VideoRotation::default(),
        };
        Ok(GifVideo {
            path: path.to_path_buf(),
            bytes,
            meta,
        })
    }
}

impl VideoReader for GifVideo {
    fn metadata(&self) -> &VideoMetadata {
        &self.meta
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
        let err = |msg: String| VideoError::Decode {
            path: self.path.clone(),
            msg,
        };
        let decoded = catch_unwind(AssertUnwindSafe(|| -> Result<(), VideoError> {
            let mut decoder = GifDecoder::new(Cursor::new(&self.bytes))
                .map_err(|e| err(format!("cannot read the GIF: {e}")))?;
            // The crate's GIF decoder has no limits by default: a frame declared 65535×65535 would
            // allocate gigabytes. The default limits (512 MiB) make that an error.
            decoder
                .set_limits(image::Limits::default())
                .map_err(|e| err(format!("cannot read the GIF: {e}")))?;
            for (i, frame) in decoder.into_frames().enumerate().take(last + 1) {
                let frame = frame.map_err(|e| err(format!("cannot decode GIF frame {i}: {e}")))?;
                if let Some(slot) = wanted.get_mut(&i) {
                    *slot = Some(map(to_rgb(frame.buffer())));
                }
                progress(i + 1, last + 1);
            }
            Ok(())
        }))
        .map_err(|_| err("the GIF decoder panicked".into()))?;
        decoded?;
        if let Some((&i, _)) = wanted.iter().find(|(_, f)| f.is_none()) {
            return Err(err(format!("the GIF decoder stopped before frame {i}")));
        }
        Ok(in_request_order(indices, wanted))
    }
}

/// FFmpeg decodes GIFs to RGBA and PyAV's rgb24 conversion drops the alpha. FFmpeg paints
/// transparent pixels in its `trans_color`, 0x00FFFFFF: white under zero alpha.
fn to_rgb(canvas: &image::RgbaImage) -> RgbImage {
    let (w, h) = canvas.dimensions();
    let data = canvas
        .pixels()
        .flat_map(|p| {
            if p.0[3] == 0 {
                [255; 3]
            } else {
                [p.0[0], p.0[1], p.0[2]]
            }
        })
        .collect();
    RgbImage::from_raw(w, h, data).expect("sized from the canvas")
}

struct Layout {
    width: usize,
    height: usize,
    /// Per frame, in 1/100 s, as FFmpeg plays it.
    delays: Vec<u16>,
}

/// Walks the GIF block structure: the screen size and every frame's delay.
fn scan(data: &[u8]) -> Result<Layout, String> {
    let mut r = Bytes { data, pos: 0 };
    if !matches!(r.take(6)?, b"GIF87a" | b"GIF89a") {
        return Err("not a GIF87a/GIF89a header".into());
    }
    let width = usize::from(r.u16()?);
    let height = usize::from(r.u16()?);
    let packed = r.u8()?;
    r.take(2)?; // background colour index, aspect ratio
                // The decoder composites onto a canvas of this size (4 bytes a pixel): 2^26 pixels is 256 MiB.
    if width == 0 || height == 0 || width * height > 1 << 26 {
        return Err(format!("the logical screen is {width}×{height}"));
    }
    if packed & 0x80 != 0 {
        r.take(3 << ((packed & 7) + 1))?;
    }
    let mut delays = Vec::new();
    let mut delay = DEFAULT_DELAY;
    // Without a trailer FFmpeg plays the complete frames it found, and so do we.
    while let Ok(block) = r.u8() {
        match block {
            0x21 => {
                if r.u8()? == 0xF9 {
                    let body = r.sub_blocks()?;
                    if body.len() >= 3 {
                        let d = u16::from_le_bytes([body[1], body[2]]);
                        delay = if d == 0 { DEFAULT_DELAY } else { d };
                    }
                } else {
                    r.sub_blocks()?;
                }
            }
            0x2C => {
                r.take(8)?; // left, top, width, height
                let packed = r.u8()?;
                if packed & 0x80 != 0 {
                    r.take(3 << ((packed & 7) + 1))?;
                }
                r.u8()?; // LZW minimum code size
                r.sub_blocks()
                    .map_err(|_| format!("frame {} is truncated", delays.len()))?;
                delays.push(delay);
            }
            0x3B => break,
            b => return Err(format!("unknown block type {b:#04x} at byte {}", r.pos - 1)),
        }
    }
    Ok(Layout {
        width,
        height,
        delays,
    })
}

struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let s = self
            .data
            .get(self.pos..self.pos + n)
            .ok_or("the GIF ends early")?;
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    /// A chain of data sub-blocks up to the zero-length terminator; returns the first block.
    fn sub_blocks(&mut self) -> Result<&'a [u8], String> {
        let mut first: Option<&'a [u8]> = None;
        loop {
            let n = usize::from(self.u8()?);
            if n == 0 {
                return Ok(first.unwrap_or(&[]));
            }
            let block = self.take(n)?;
            first.get_or_insert(block);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_rejects_garbage_without_panicking() {
        let err = |data: &[u8]| scan(data).err().expect("garbage must not scan");
        assert_eq!(err(b""), "the GIF ends early");
        assert_eq!(
            err(b"GIF87b\x01\x00\x01\x00\x00\x00\x00\x3b"),
            "not a GIF87a/GIF89a header"
        );
        assert_eq!(err(b"GIF89a"), "the GIF ends early");
        assert_eq!(
            err(b"GIF89a\x01\x00\x01\x00\x00\x00\x00\x2c\x00"),
            "the GIF ends early"
        );
        assert_eq!(
            err(b"GIF89a\x01\x00\x01\x00\x00\x00\x00\x99"),
            "unknown block type 0x99 at byte 13"
        );
        let empty = scan(b"GIF89a\x01\x00\x01\x00\x00\x00\x00\x3b").unwrap();
        assert!(empty.delays.is_empty());
    }
}

//! Decoded pictures → RGB24 exactly as transformers gets them from PyAV's
//! `frame.to_ndarray(format="rgb24")`.
//!
//! PyAV's `VideoReformatter` converts with libswscale: `SWS_BILINEAR` and nothing else in the
//! flags (no `ACCURATE_RND`, no full chroma interpolation), the same size in and out, the matrix
//! of the frame's own colour space (BT.601 where the stream leaves it unspecified), the frame's
//! own range, and `threads = 0` (libswscale picks the count). Same settings, same library code:
//! the fixtures of tools/golden/make_media_fixtures.py measure the frames identical, 4:4:4
//! included. Two things differ between PyAV's libswscale (9.5, FFmpeg 8) and Debian's (6.7,
//! FFmpeg 5.1), and both are done here by hand: libswscale 9 converts an interlaced frame field
//! by field (each field's chroma lines with its own luma lines), and it converts 10-bit 4:2:0
//! with the frame's chroma siting and its table arithmetic (`yuv10`). 10-bit pictures of odd
//! width or height, and other high-bit-depth formats (4:2:2 and 4:4:4 10-bit, 12-bit), keep
//! 6.7's conversion: libswscale 9 scales their chroma in ways not reproduced here.

use std::ptr;

use ffmpeg_next::ffi;
use ffmpeg_next::format::Pixel;
use ffmpeg_next::util::frame::video::Video as Frame;
use image::RgbImage;

use super::yuv10::{yuv420p10_to_rgb, ChromaSiting, Plane, Yuv420p10};
use crate::video::decode::ColorInfo;

/// What a conversion context is set up for; a stream that changes any of it gets a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    format: ffi::AVPixelFormat,
    width: i32,
    height: i32,
    colorspace: ffi::AVColorSpace,
    full_range: bool,
}

/// One libswscale context and its output frame.
struct Scaler {
    ctx: *mut ffi::SwsContext,
    key: Option<Key>,
    out: Option<Frame>,
}

pub(super) struct ToRgb {
    frames: Scaler,
    /// Top and bottom field of interlaced frames (their heights differ when the frame's is odd).
    fields: [Scaler; 2],
}

// The contexts are only used by the thread that owns the reader.
unsafe impl Send for Scaler {}

impl Drop for Scaler {
    fn drop(&mut self) {
        // SAFETY: ctx is null or a context from sws_alloc_context that nothing else holds.
        unsafe { ffi::sws_freeContext(self.ctx) }
    }
}

impl ToRgb {
    pub(super) fn new() -> Self {
        ToRgb {
            frames: Scaler::new(),
            fields: [Scaler::new(), Scaler::new()],
        }
    }

    pub(super) fn convert(&mut self, frame: &Frame) -> Result<RgbImage, String> {
        let (w, h) = (frame.width() as usize, frame.height() as usize);
        if !frame.is_interlaced() {
            return match ten_bit(frame, None) {
                Some(rgb) => Ok(RgbImage::from_raw(w as u32, h as u32, rgb).expect("w·h·3 bytes")),
                None => self.frames.convert(frame),
            };
        }
        let mut rgb = vec![0u8; w * h * 3];
        for (field, scaler) in self.fields.iter_mut().enumerate() {
            let lines = match ten_bit(frame, Some(field)) {
                Some(lines) => lines,
                None => scaler.convert_field(frame, field)?,
            };
            for (k, line) in lines.chunks_exact(w * 3).enumerate() {
                let row = 2 * k + field;
                rgb[row * w * 3..(row + 1) * w * 3].copy_from_slice(line);
            }
        }
        Ok(RgbImage::from_raw(w as u32, h as u32, rgb).expect("w·h·3 bytes"))
    }
}

impl Scaler {
    fn new() -> Self {
        Scaler {
            ctx: ptr::null_mut(),
            key: None,
            out: None,
        }
    }

    /// The lines of one field (0: top, the even lines) as RGB24 rows, converted as a picture of
    /// their own: the field's chroma lines are every other chroma line.
    fn convert_field(&mut self, frame: &Frame, field: usize) -> Result<Vec<u8>, String> {
        // SAFETY: a decoded frame's pointer stays valid while `frame` is borrowed.
        let raw = unsafe { &*frame.as_ptr() };
        let height = (raw.height - field as i32 + 1) / 2;
        let key = self.prepare(frame, height)?;
        let out = self.out.as_mut().expect("set up with the context");
        let mut src = [ptr::null::<u8>(); 4];
        let mut stride = [0i32; 4];
        for p in 0..4 {
            if !raw.data[p].is_null() {
                // SAFETY: line `field` of a plane with at least two lines stays inside it.
                src[p] = unsafe { raw.data[p].offset(field as isize * raw.linesize[p] as isize) };
                stride[p] = raw.linesize[p] * 2;
            }
        }
        // SAFETY: the source pointers and strides describe the field's lines inside the decoded
        // planes; `out` is an allocated RGB24 frame of the field's size.
        let ret = unsafe {
            let o = &mut *out.as_mut_ptr();
            ffi::sws_scale(
                self.ctx,
                src.as_ptr(),
                stride.as_ptr(),
                0,
                height,
                o.data.as_ptr(),
                o.linesize.as_ptr(),
            )
        };
        if ret < 0 {
            return Err(scale_error(frame, ret));
        }
        Ok(rows(out, key.width as usize, height as usize))
    }

    fn convert(&mut self, frame: &Frame) -> Result<RgbImage, String> {
        // SAFETY: a decoded frame's pointer stays valid while `frame` is borrowed.
        let height = unsafe { (*frame.as_ptr()).height };
        let key = self.prepare(frame, height)?;
        let out = self.out.as_mut().expect("set up with the context");
        // SAFETY: the context was initialised for this format and size; `out` is an allocated
        // RGB24 frame of the same size.
        let ret = unsafe { ffi::sws_scale_frame(self.ctx, out.as_mut_ptr(), frame.as_ptr()) };
        if ret < 0 {
            return Err(scale_error(frame, ret));
        }
        let (w, h) = (key.width as usize, key.height as usize);
        let rgb = rows(out, w, h);
        Ok(RgbImage::from_raw(w as u32, h as u32, rgb).expect("w·h·3 bytes"))
    }

    /// Sets the context up for `height` lines of `frame`'s format, size and colour, unless it is.
    fn prepare(&mut self, frame: &Frame, height: i32) -> Result<Key, String> {
        // SAFETY: a decoded frame's pointer stays valid while `frame` is borrowed.
        let raw = unsafe { &*frame.as_ptr() };
        let key = Key {
            format: frame.format().into(),
            width: raw.width,
            height,
            colorspace: raw.colorspace,
            full_range: raw.color_range == ffi::AVColorRange::AVCOL_RANGE_JPEG,
        };
        check(&key, frame)?;
        if self.key != Some(key) {
            self.setup(key)?;
        }
        Ok(key)
    }

    fn setup(&mut self, key: Key) -> Result<(), String> {
        // SAFETY: every call gets a context this struct owns; option names are libswscale's.
        unsafe {
            ffi::sws_freeContext(self.ctx);
            self.key = None;
            self.ctx = ffi::sws_alloc_context();
            if self.ctx.is_null() {
                return Err("cannot allocate a libswscale context".into());
            }
            let obj = self.ctx.cast();
            let dst = ffi::AVPixelFormat::AV_PIX_FMT_RGB24;
            let ints: [(&[u8], i64); 8] = [
                (b"srcw\0", key.width.into()),
                (b"srch\0", key.height.into()),
                (b"src_format\0", key.format as i64),
                (b"dstw\0", key.width.into()),
                (b"dsth\0", key.height.into()),
                (b"dst_format\0", dst as i64),
                (b"sws_flags\0", ffi::SWS_BILINEAR as i64),
                (b"threads\0", 0),
            ];
            for (name, value) in ints {
                let r = ffi::av_opt_set_int(obj, name.as_ptr().cast(), value, 0);
                if r < 0 {
                    return Err(format!(
                        "libswscale rejects {}: {}",
                        String::from_utf8_lossy(&name[..name.len() - 1]),
                        ffmpeg_next::Error::from(r)
                    ));
                }
            }
            let r = ffi::sws_init_context(self.ctx, ptr::null_mut(), ptr::null_mut());
            if r < 0 {
                return Err(format!(
                    "libswscale cannot convert {:?} to RGB: {}",
                    key.format,
                    ffmpeg_next::Error::from(r)
                ));
            }
            // sws_getCoefficients takes the AVColorSpace numbering and gives BT.601 for values
            // it has no matrix for (unspecified included), as FFmpeg's frame-based setup does.
            let src = ffi::sws_getCoefficients(key.colorspace as i32);
            let dst_table = ffi::sws_getCoefficients(ffi::SWS_CS_DEFAULT);
            ffi::sws_setColorspaceDetails(
                self.ctx,
                src,
                key.full_range.into(),
                dst_table,
                0,
                0,
                1 << 16,
                1 << 16,
            );
        }
        self.out = Some(Frame::new(
            Pixel::RGB24,
            key.width as u32,
            key.height as u32,
        ));
        self.key = Some(key);
        Ok(())
    }
}

/// A 10-bit 4:2:0 picture, or field `field` of one (0: top, the even lines), converted as
/// libswscale 9 does; `None` where [`yuv10`](super::yuv10) does not apply.
fn ten_bit(frame: &Frame, field: Option<usize>) -> Option<Vec<u8>> {
    if frame.format() != Pixel::YUV420P10LE {
        return None;
    }
    // SAFETY: a decoded frame's pointer stays valid while `frame` is borrowed.
    let raw = unsafe { &*frame.as_ptr() };
    let (width, full_height) = (
        usize::try_from(raw.width).ok()?,
        usize::try_from(raw.height).ok()?,
    );
    let (first, step, height) = match field {
        Some(f) => (f, 2, (full_height + 1).checked_sub(f)? / 2),
        None => (0, 1, full_height),
    };
    if width % 2 == 1 || height % 2 == 1 {
        return None;
    }
    let plane = |i: usize| Plane {
        data: frame.data(i),
        stride: frame.stride(i),
        first,
        step,
    };
    let picture = Yuv420p10 {
        width,
        height,
        y: plane(0),
        u: plane(1),
        v: plane(2),
    };
    let color = ColorInfo {
        matrix: u8::try_from(raw.colorspace as u32).unwrap_or(2),
        full_range: raw.color_range == ffi::AVColorRange::AVCOL_RANGE_JPEG,
    };
    yuv420p10_to_rgb(
        &picture,
        color,
        ChromaSiting::from_av(raw.chroma_location as u32),
    )
}

fn check(key: &Key, frame: &Frame) -> Result<(), String> {
    if key.width <= 0 || key.height <= 0 || key.format == ffi::AVPixelFormat::AV_PIX_FMT_NONE {
        return Err(format!(
            "the decoder returned an empty picture ({}x{}, {:?})",
            key.width,
            key.height,
            frame.format()
        ));
    }
    Ok(())
}

/// The first `h` rows of an RGB24 frame without their padding.
fn rows(out: &Frame, w: usize, h: usize) -> Vec<u8> {
    let stride = out.stride(0);
    let data = out.data(0);
    let mut rgb = Vec::with_capacity(w * h * 3);
    for row in 0..h {
        rgb.extend_from_slice(&data[row * stride..row * stride + w * 3]);
    }
    rgb
}

fn scale_error(frame: &Frame, ret: i32) -> String {
    format!(
        "libswscale cannot convert {:?} to RGB: {}",
        frame.format(),
        ffmpeg_next::Error::from(ret)
    )
}

//! openh264 behind a small interface: feed one access unit (Annex-B) at a time with a tag, get
//! back pictures with the tag of the access unit they came from.
//!
//! openh264 reorders B-frame streams into display order itself, by heuristics on the slice
//! types and POCs. The caller does not depend on them: every access unit is tagged through
//! openh264's timestamp field (`uiInBsTimeStamp` in, `uiOutYuvTimeStamp` out), so each picture
//! maps back to its sample and the container's composition times decide the display order.

use openh264::decoder::{Decoder, DecoderConfig};
use openh264::OpenH264API;
use openh264_sys2::{dsErrorFree, SBufferInfo, DECODER_OPTION_NUM_OF_FRAMES_REMAINING_IN_BUFFER};
use std::os::raw::c_void;
use std::ptr::null_mut;

use super::yuv::Yuv420;

pub struct H264Decoder {
    decoder: Decoder,
}

impl H264Decoder {
    pub fn new() -> Result<Self, String> {
        // Error concealment stays off (the default): a damaged picture is an error, not output.
        let decoder = Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new())
            .map_err(|e| format!("cannot create the H.264 decoder: {e}"))?;
        Ok(H264Decoder { decoder })
    }

    /// Decodes one access unit; `picture` receives every picture openh264 outputs now (zero or
    /// one), with the tag of the access unit it was decoded from. Tags must be non-zero.
    pub fn decode(
        &mut self,
        access_unit: &[u8],
        tag: u64,
        picture: &mut dyn FnMut(u64, &Yuv420<'_>),
    ) -> Result<(), String> {
        let len = i32::try_from(access_unit.len())
            .map_err(|_| "access unit larger than 2 GiB".to_string())?;
        let mut info = SBufferInfo {
            uiInBsTimeStamp: tag,
            ..Default::default()
        };
        let mut dst = [null_mut::<u8>(); 3];
        // SAFETY: the pointers live for the call; openh264 copies the input.
        let state = unsafe {
            self.decoder.raw_api().decode_frame_no_delay(
                access_unit.as_ptr(),
                len,
                dst.as_mut_ptr(),
                &raw mut info,
            )
        };
        if state != dsErrorFree {
            return Err(format!("openh264 reported decoding state {state:#x}"));
        }
        emit(&dst, &info, picture)
    }

    /// Signals the end of the stream and returns the pictures openh264 still holds for
    /// reordering.
    pub fn flush(&mut self, picture: &mut dyn FnMut(u64, &Yuv420<'_>)) -> Result<(), String> {
        let mut info = SBufferInfo::default();
        let mut dst = [null_mut::<u8>(); 3];
        // An empty input marks the end of the stream; the state is not an error here (there is
        // no access unit left to be damaged).
        // SAFETY: a null input of length 0 is openh264's documented end-of-stream call.
        unsafe {
            self.decoder.raw_api().decode_frame_no_delay(
                std::ptr::null(),
                0,
                dst.as_mut_ptr(),
                &raw mut info,
            );
        }
        emit(&dst, &info, picture)?;
        // Bounded: openh264's reorder queue holds at most 16 pictures.
        for _ in 0..self.buffered()?.min(32) {
            let mut info = SBufferInfo::default();
            let mut dst = [null_mut::<u8>(); 3];
            // SAFETY: as above.
            unsafe {
                self.decoder
                    .raw_api()
                    .flush_frame(dst.as_mut_ptr(), &raw mut info);
            }
            if info.iBufferStatus != 1 {
                break;
            }
            emit(&dst, &info, picture)?;
        }
        Ok(())
    }

    fn buffered(&mut self) -> Result<usize, String> {
        let mut n: i32 = 0;
        // SAFETY: the option writes one int.
        let state = unsafe {
            self.decoder.raw_api().get_option(
                DECODER_OPTION_NUM_OF_FRAMES_REMAINING_IN_BUFFER,
                (&raw mut n).cast::<c_void>(),
            )
        };
        if state != 0 {
            return Err(format!("openh264 get_option failed ({state})"));
        }
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

/// Hands a ready picture's planes to `picture`; they are only valid until the next decoder call.
fn emit(
    dst: &[*mut u8; 3],
    info: &SBufferInfo,
    picture: &mut dyn FnMut(u64, &Yuv420<'_>),
) -> Result<(), String> {
    if info.iBufferStatus != 1 {
        return Ok(());
    }
    // SAFETY: reading the plain-data union member openh264 fills for system-memory output.
    let buf = unsafe { info.UsrData.sSystemBuffer };
    if dst.iter().any(|p| p.is_null()) {
        return Err("openh264 returned a picture without planes".into());
    }
    let dims = [buf.iWidth, buf.iHeight, buf.iStride[0], buf.iStride[1]];
    let [width, height, y_stride, uv_stride] = dims.map(|d| usize::try_from(d).unwrap_or(0));
    if width == 0 || height == 0 || y_stride < width || uv_stride < width.div_ceil(2) {
        return Err(format!(
            "openh264 returned a picture of bad geometry {dims:?}"
        ));
    }
    let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
    // SAFETY: openh264's picture buffers hold `height` rows at the strides it reports (the
    // pointers are already offset by the cropping window inside padded buffers); the slices end
    // at the last pixel read.
    let (y, u, v) = unsafe {
        (
            std::slice::from_raw_parts(dst[0], (height - 1) * y_stride + width),
            std::slice::from_raw_parts(dst[1], (ch - 1) * uv_stride + cw),
            std::slice::from_raw_parts(dst[2], (ch - 1) * uv_stride + cw),
        )
    };
    picture(
        info.uiOutYuvTimeStamp,
        &Yuv420 {
            width,
            height,
            y,
            u,
            v,
            y_stride,
            uv_stride,
        },
    );
    Ok(())
}

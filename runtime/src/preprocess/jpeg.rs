//! JPEG decoding with libjpeg-turbo's decompressor, the decoder Pillow uses, so
//! a JPEG gives the pixels transformers' `load_image` gives (ISLOW IDCT, fancy
//! upsampling, its YCbCr tables). The library is the copy that `mozjpeg-sys`
//! vendors and builds with `cc` (C only, no nasm; mozjpeg changes only the
//! encoder). Output modes follow Pillow's JPEG plugin: 1 component is `L`,
//! 3 are `RGB` (libjpeg decides YCbCr or RGB from JFIF/Adobe markers), 4 are
//! `CMYK;I` (Adobe-inverted CMYK, libjpeg turns YCCK into CMYK), which
//! `convert("RGB")` then maps with Pillow's `cmyk2rgb`.

use std::ffi::c_int;
use std::mem::MaybeUninit;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use mozjpeg_sys::*;

use super::modes::cmyk_to_rgb;

/// A decoded JPEG as 8-bit RGB, row-major, with the file's header size.
pub(super) struct DecodedJpeg {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

/// What the error callbacks record; `client_data` points at it.
#[derive(Default)]
struct Status {
    /// libjpeg's memory source ran out of data before the image (or its EOI
    /// marker) ended: Pillow reports such a file as truncated.
    hit_eof: bool,
}

/// libjpeg must not return from `error_exit`: unwind (without running the
/// panic hook) back to `decode_jpeg`, carrying libjpeg's message.
///
/// # Safety
/// Called by libjpeg with its live struct, whose `err` is the manager set up
/// in `decode_jpeg`; the C is built with `-fexceptions` (the `unwinding`
/// feature), so the unwind may cross it.
unsafe extern "C-unwind" fn error_exit(cinfo: &mut jpeg_common_struct) {
    let msg = unsafe { format_message(cinfo) };
    resume_unwind(Box::new(msg));
}

/// Warnings are not printed; the one that means "truncated" is recorded.
///
/// # Safety
/// Called by libjpeg with its live struct; `client_data` is null or points at
/// the `Status` of the running `decode_jpeg`.
unsafe extern "C-unwind" fn emit_message(cinfo: &mut jpeg_common_struct, level: c_int) {
    if level < 0 {
        let code = unsafe { (*cinfo.err).msg_code };
        if code == JWRN_JPEG_EOF as c_int && !cinfo.client_data.is_null() {
            unsafe { (*(cinfo.client_data as *mut Status)).hit_eof = true };
        }
    }
}

/// libjpeg's text for its last message.
///
/// # Safety
/// `cinfo` is a libjpeg struct whose `err` points at a live error manager.
unsafe fn format_message(cinfo: &mut jpeg_common_struct) -> String {
    let buf = [0u8; 80];
    unsafe {
        if let Some(f) = (*cinfo.err).format_message {
            f(cinfo, &buf);
        }
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Decodes a whole JPEG. `check_size(width, height)` runs on the header's size
/// before anything is allocated for pixels. Truncated files (including a
/// missing EOI marker, as in Pillow) are errors.
pub(super) fn decode_jpeg(
    bytes: &[u8],
    check_size: &dyn Fn(u32, u32) -> Result<(), String>,
) -> Result<DecodedJpeg, String> {
    let mut status = Status::default();
    let mut err: jpeg_error_mgr = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut cinfo: jpeg_decompress_struct = unsafe { MaybeUninit::zeroed().assume_init() };
    let err_mgr = unsafe { jpeg_std_error(&mut err) };
    err_mgr.error_exit = Some(error_exit);
    err_mgr.emit_message = Some(emit_message);
    cinfo.common.err = err_mgr;
    cinfo.common.client_data = (&mut status as *mut Status).cast();
    // Nothing above can fail; from here on libjpeg may unwind out of any call.
    let created = catch_unwind(AssertUnwindSafe(|| unsafe {
        jpeg_CreateDecompress(
            &mut cinfo,
            JPEG_LIB_VERSION,
            std::mem::size_of::<jpeg_decompress_struct>(),
        );
    }));
    if let Err(payload) = created {
        return Err(panic_message(payload));
    }
    let result = catch_unwind(AssertUnwindSafe(|| unsafe {
        decode_inner(&mut cinfo, bytes, check_size)
    }));
    let status_eof = status.hit_eof;
    unsafe { jpeg_destroy_decompress(&mut cinfo) };
    match result {
        Err(payload) => Err(panic_message(payload)),
        Ok(Err(e)) => Err(e),
        Ok(Ok(_)) if status_eof => Err("image file is truncated".into()),
        Ok(Ok(img)) => Ok(img),
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => match p.downcast::<&'static str>() {
            Ok(s) => s.to_string(),
            Err(_) => "the JPEG decoder failed".into(),
        },
    }
}

/// The decode proper; libjpeg errors unwind out of it.
///
/// # Safety
/// `cinfo` was created by `jpeg_CreateDecompress` with `decode_jpeg`'s error
/// manager, and `bytes` outlives it.
unsafe fn decode_inner(
    cinfo: &mut jpeg_decompress_struct,
    bytes: &[u8],
    check_size: &dyn Fn(u32, u32) -> Result<(), String>,
) -> Result<DecodedJpeg, String> {
    unsafe {
        jpeg_mem_src(cinfo, bytes.as_ptr(), bytes.len() as _);
        jpeg_read_header(cinfo, 1);
    }
    let (width, height) = (cinfo.image_width, cinfo.image_height);
    check_size(width, height)?;
    let comps = cinfo.num_components;
    // Pillow's modes by component count (JpegImagePlugin.SOF), decoded the way
    // its decoder asks libjpeg to (JpegDecode.c): defaults otherwise.
    let out_space = match comps {
        1 => J_COLOR_SPACE::JCS_GRAYSCALE,
        3 => J_COLOR_SPACE::JCS_RGB,
        4 => J_COLOR_SPACE::JCS_CMYK,
        n => return Err(format!("cannot handle {n}-layer images")),
    };
    cinfo.out_color_space = out_space;
    unsafe { jpeg_start_decompress(cinfo) };
    let out_comps = cinfo.output_components as usize;
    let row_len = width as usize * out_comps;
    let mut raw = vec![0u8; row_len * height as usize];
    while cinfo.output_scanline < cinfo.output_height {
        let start = cinfo.output_scanline as usize * row_len;
        let mut row_ptr = [raw[start..].as_mut_ptr()];
        let n = unsafe { jpeg_read_scanlines(cinfo, row_ptr.as_mut_ptr(), 1) };
        if n == 0 {
            return Err("image file is truncated".into());
        }
    }
    unsafe { jpeg_finish_decompress(cinfo) };
    let rgb = match out_comps {
        1 => raw.iter().flat_map(|&v| [v, v, v]).collect(),
        3 => raw,
        // "CMYK;I": Pillow inverts the stored values (Adobe's convention)
        _ => raw
            .chunks_exact(4)
            .flat_map(|p| cmyk_to_rgb([255 - p[0], 255 - p[1], 255 - p[2], 255 - p[3]]))
            .collect(),
    };
    Ok(DecodedJpeg { width, height, rgb })
}

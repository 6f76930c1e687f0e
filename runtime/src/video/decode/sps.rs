//! The parts of an H.264 sequence parameter set the decoder needs before decoding: whether
//! openh264 can decode the stream at all (profile, chroma format, bit depth, interlacing), the
//! displayed size, and the VUI colour description that decides the YUV → RGB matrix.

use super::yuv::ColorInfo;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sps {
    pub profile_idc: u8,
    pub level_idc: u8,
    pub chroma_format_idc: u32,
    pub bit_depth_luma: u32,
    pub bit_depth_chroma: u32,
    pub frame_mbs_only: bool,
    /// Displayed size after the SPS cropping window.
    pub width: usize,
    pub height: usize,
    pub color: ColorInfo,
}

impl Sps {
    /// The profile's name, for messages.
    pub fn profile_name(&self) -> String {
        let name = match self.profile_idc {
            66 => "Baseline",
            77 => "Main",
            88 => "Extended",
            100 => "High",
            110 => "High 10",
            122 => "High 4:2:2",
            244 => "High 4:4:4 Predictive",
            44 => "CAVLC 4:4:4 Intra",
            83 | 86 => "Scalable",
            118 | 128 => "Multiview",
            _ => return format!("profile_idc {}", self.profile_idc),
        };
        name.to_string()
    }

    /// Why openh264 cannot decode this stream, if it cannot: it decodes 8-bit 4:2:0
    /// progressive (frame_mbs_only) streams of the Baseline, Main and High profiles.
    pub fn unsupported(&self) -> Option<String> {
        let what = format!("H.264 {} profile", self.profile_name());
        if self.bit_depth_luma != 8 || self.bit_depth_chroma != 8 {
            return Some(format!(
                "{what} with {}-bit samples (only 8-bit is decoded)",
                self.bit_depth_luma.max(self.bit_depth_chroma)
            ));
        }
        match self.chroma_format_idc {
            1 => {}
            0 => return Some(format!("{what}, monochrome (4:0:0)")),
            2 => return Some(format!("{what}, 4:2:2 chroma")),
            _ => return Some(format!("{what}, 4:4:4 chroma")),
        }
        if !self.frame_mbs_only {
            return Some(format!("interlaced {what} (field or MBAFF coding)"));
        }
        None
    }
}

/// Parses an SPS NAL unit (header byte included, emulation prevention bytes not yet removed).
pub fn parse_sps(nal: &[u8]) -> Result<Sps, String> {
    let Some((&header, payload)) = nal.split_first() else {
        return Err("empty SPS".into());
    };
    if header & 0x1F != 7 {
        return Err(format!("NAL type {} is not an SPS", header & 0x1F));
    }
    let rbsp = unescape(payload);
    let mut r = BitReader::new(&rbsp);
    let profile_idc = r.bits(8)? as u8;
    r.bits(8)?; // constraint flags
    let level_idc = r.bits(8)? as u8;
    r.ue()?; // seq_parameter_set_id
    let (mut chroma_format_idc, mut bit_depth_luma, mut bit_depth_chroma) = (1, 8, 8);
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            r.bits(1)?; // separate_colour_plane_flag
        }
        bit_depth_luma = r.ue()? + 8;
        bit_depth_chroma = r.ue()? + 8;
        r.bits(1)?; // qpprime_y_zero_transform_bypass_flag
        if r.flag()? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bits(1)?; // delta_pic_order_always_zero_flag
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            let cycle = r.ue()?;
            if cycle > 255 {
                return Err(format!(
                    "num_ref_frames_in_pic_order_cnt_cycle {cycle} > 255"
                ));
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        2 => {}
        t => return Err(format!("pic_order_cnt_type {t} > 2")),
    }
    r.ue()?; // max_num_ref_frames
    r.bits(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.flag()?;
    if !frame_mbs_only {
        r.bits(1)?; // mb_adaptive_frame_field_flag
    }
    r.bits(1)?; // direct_8x8_inference_flag
    let field_factor = if frame_mbs_only { 1 } else { 2 };
    let mut width = width_mbs * 16;
    let mut height = height_map_units * 16 * field_factor;
    if r.flag()? {
        let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        let (unit_x, unit_y) = match chroma_format_idc {
            0 => (1, field_factor),
            1 => (2, 2 * field_factor),
            2 => (2, field_factor),
            _ => (1, field_factor),
        };
        let crop_x = unit_x * (u64::from(left) + u64::from(right));
        let crop_y = unit_y * (u64::from(top) + u64::from(bottom));
        if crop_x >= width || crop_y >= height {
            return Err(format!(
                "cropping window ({crop_x}×{crop_y}) is larger than the picture ({width}×{height})"
            ));
        }
        width -= crop_x;
        height -= crop_y;
    }
    // H.264 level 6.2 tops out at 139264 macroblocks (8192×4320 and the like); beyond this
    // bound the RGB frames alone would not fit in memory.
    if width > 16384 || height > 16384 || width * height > 1 << 26 {
        return Err(format!("picture size {width}×{height} is out of range"));
    }
    let mut color = ColorInfo::default();
    if r.flag()? {
        // vui_parameters up to the colour description
        // aspect_ratio_info_present_flag, aspect_ratio_idc 255 = extended SAR
        if r.flag()? && r.bits(8)? == 255 {
            r.bits(16)?; // sar_width
            r.bits(16)?; // sar_height
        }
        if r.flag()? {
            r.bits(1)?; // overscan_appropriate_flag
        }
        if r.flag()? {
            r.bits(3)?; // video_format
            color.full_range = r.flag()?;
            if r.flag()? {
                r.bits(8)?; // colour_primaries
                r.bits(8)?; // transfer_characteristics
                color.matrix = r.bits(8)? as u8;
            }
        }
    }
    Ok(Sps {
        profile_idc,
        level_idc,
        chroma_format_idc,
        bit_depth_luma,
        bit_depth_chroma,
        frame_mbs_only,
        width: width as usize,
        height: height as usize,
        color,
    })
}

fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), String> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            next = (last + i64::from(r.se()?) + 256) % 256;
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

/// Removes emulation prevention bytes (00 00 03 → 00 00).
fn unescape(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut zeros = 0;
    for &b in data {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    fn bit(&mut self) -> Result<u32, String> {
        let byte = self.data.get(self.pos / 8).ok_or("SPS ends early")?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(u32::from(b))
    }

    fn flag(&mut self) -> Result<bool, String> {
        Ok(self.bit()? == 1)
    }

    fn bits(&mut self, n: u32) -> Result<u32, String> {
        (0..n).try_fold(0, |acc, _| Ok((acc << 1) | self.bit()?))
    }

    /// Exp-Golomb unsigned.
    fn ue(&mut self) -> Result<u32, String> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err("exp-Golomb code longer than 32 bits".into());
            }
        }
        let rest = self.bits(zeros)?;
        Ok(((1u64 << zeros) - 1 + u64::from(rest)).min(u64::from(u32::MAX)) as u32)
    }

    /// Exp-Golomb signed.
    fn se(&mut self) -> Result<i32, String> {
        let k = i64::from(self.ue()?);
        let v = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        Ok(v as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libx264_high_profile_sps() {
        // The SPS libx264 wrote for a 160×120 clip (High, level 1.0, coded 160×128 and cropped).
        let sps = [
            0x67, 0x64, 0x00, 0x0a, 0xac, 0xd9, 0x42, 0x84, 0x7e, 0x58, 0x40, 0x00, 0x00, 0x03,
            0x00, 0x40, 0x00, 0x00, 0x05, 0x03, 0xc4, 0x89, 0x65, 0x80,
        ];
        let s = parse_sps(&sps).unwrap();
        assert_eq!(
            (s.profile_idc, s.chroma_format_idc, s.bit_depth_luma),
            (100, 1, 8)
        );
        assert_eq!((s.width, s.height), (160, 120));
        assert!(s.frame_mbs_only);
        assert_eq!(s.color, ColorInfo::default());
        assert_eq!(s.unsupported(), None);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert_eq!(parse_sps(&[]).unwrap_err(), "empty SPS");
        assert_eq!(
            parse_sps(&[0x68, 1, 2]).unwrap_err(),
            "NAL type 8 is not an SPS"
        );
        assert_eq!(parse_sps(&[0x67, 0x64]).unwrap_err(), "SPS ends early");
        // seq_parameter_set_id is an exp-Golomb code of 48 zero bits.
        assert_eq!(
            parse_sps(&[0x67, 0x64, 0, 0x0b, 0, 0, 0, 0, 0, 0]).unwrap_err(),
            "exp-Golomb code longer than 32 bits"
        );
    }
}

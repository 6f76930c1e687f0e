//! MP4 files with an H.264 video track: the mp4 crate parses the boxes, `mp4_index` lays out
//! the samples and their times, openh264 decodes (samples converted from the avcC length-prefixed
//! form to Annex-B), `yuv` converts to RGB as PyAV does.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use image::RgbImage;

use super::h264::H264Decoder;
use super::mp4_index::{codec_name, index_track, video_codec_fourcc, TrackIndex};
use super::sps::{parse_sps, Sps};
use super::yuv::{yuv420_to_rgb, ColorInfo, Yuv420};
use super::{
    check_indices, FrameMap, VideoError, VideoFormat, VideoMetadata, VideoReader, VideoRotation,
};

const START_CODE: [u8; 4] = [0, 0, 0, 1];

pub struct Mp4Video {
    path: PathBuf,
    file: File,
    meta: VideoMetadata,
    index: TrackIndex,
    /// SPS and PPS from avcC, Annex-B, fed before the first sample.
    parameter_sets: Vec<u8>,
    /// Bytes of each NAL length prefix in the samples (1, 2 or 4).
    nal_length_size: usize,
    sps: Sps,
}

impl Mp4Video {
    pub fn open(path: &Path) -> Result<Self, VideoError> {
        let malformed = |msg: String| VideoError::Malformed {
            path: path.to_path_buf(),
            msg,
        };
        let io = |error| VideoError::Io {
            path: path.to_path_buf(),
            error,
        };
        let file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let reader = BufReader::new(file.try_clone().map_err(io)?);
        // The crate returns errors for the malformed files tried, but it is not hardened
        // against every input: fuzzing found boxes that make it read or seek over the same
        // bytes forever. Box sizes are checked first, its reads and seeks are budgeted (a
        // parser that makes progress needs far fewer than the budget), and a panic becomes an
        // error too.
        check_box_sizes(&file, file_len).map_err(malformed)?;
        let budgeted = Budgeted {
            inner: reader,
            left: file_len.saturating_mul(4).saturating_add(1 << 16),
        };
        let mp4 = catch_unwind(AssertUnwindSafe(|| {
            ::mp4::Mp4Reader::read_header(budgeted, file_len)
        }))
        .map_err(|_| malformed("the MP4 parser panicked on this file".into()))?
        .map_err(|e| malformed(format!("cannot read the MP4 boxes: {e}")))?;
        if mp4.is_fragmented() {
            return Err(VideoError::Unsupported {
                path: path.to_path_buf(),
                what: "fragmented MP4 (moof boxes)".into(),
            });
        }
        // PyAV's `streams.video[0]`: the first video track in file order.
        let track = mp4
            .moov
            .traks
            .iter()
            .find(|t| &t.mdia.hdlr.handler_type.value == b"vide")
            .and_then(|t| mp4.tracks().get(&t.tkhd.track_id))
            .ok_or_else(|| malformed("the file has no video track".into()))?;
        let trak = &track.trak;
        let Some(avc1) = &trak.mdia.minf.stbl.stsd.avc1 else {
            let fourcc = read_moov(&file).as_deref().and_then(video_codec_fourcc);
            let what = fourcc.map_or_else(
                || "a video codec other than H.264".to_string(),
                |f| codec_name(&f),
            );
            return Err(VideoError::Unsupported {
                path: path.to_path_buf(),
                what,
            });
        };
        let avcc = &avc1.avcc;
        let nal_length_size = usize::from(avcc.length_size_minus_one & 3) + 1;
        if nal_length_size == 3 {
            return Err(malformed("avcC declares 3-byte NAL lengths".into()));
        }
        let sps_nal = avcc
            .sequence_parameter_sets
            .first()
            .ok_or_else(|| malformed("avcC holds no SPS".into()))?;
        if avcc.picture_parameter_sets.is_empty() {
            return Err(malformed("avcC holds no PPS".into()));
        }
        let sps = parse_sps(&sps_nal.bytes)
            .map_err(|e| malformed(format!("bad H.264 SPS in avcC: {e}")))?;
        if let Some(what) = sps.unsupported() {
            return Err(VideoError::Unsupported {
                path: path.to_path_buf(),
                what,
            });
        }
        let mut parameter_sets = Vec::new();
        for nal in avcc
            .sequence_parameter_sets
            .iter()
            .chain(&avcc.picture_parameter_sets)
        {
            parameter_sets.extend_from_slice(&START_CODE);
            parameter_sets.extend_from_slice(&nal.bytes);
        }
        let mut index = index_track(track, mp4.moov.mvhd.timescale, file_len).map_err(malformed)?;
        let meta = VideoMetadata {
            total_frames: index.samples.len(),
            fps: index.fps,
            width: sps.width,
            height: sps.height,
            duration_s: index.duration_s,
            frame_times: Some(std::mem::take(&mut index.frame_times)),
            format: VideoFormat::Mp4H264,
            rotation: VideoRotation::default(),
        };
        Ok(Mp4Video {
            path: path.to_path_buf(),
            file,
            meta,
            index,
            parameter_sets,
            nal_length_size,
            sps,
        })
    }

    fn decode_error(&self, msg: String) -> VideoError {
        VideoError::Decode {
            path: self.path.clone(),
            msg,
        }
    }

    /// Sample `i` (decode order) as an Annex-B access unit in `out`.
    fn read_access_unit(
        &mut self,
        i: usize,
        raw: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), VideoError> {
        let s = self.index.samples[i];
        raw.resize(s.size as usize, 0);
        let io = |error| VideoError::Io {
            path: self.path.clone(),
            error,
        };
        self.file.seek(SeekFrom::Start(s.offset)).map_err(io)?;
        self.file.read_exact(raw).map_err(io)?;
        out.clear();
        if i == 0 {
            out.extend_from_slice(&self.parameter_sets);
        }
        let mut rest = &raw[..];
        while !rest.is_empty() {
            let n = self.nal_length_size;
            let len = rest
                .get(..n)
                .map(|b| b.iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x)));
            match len {
                Some(len) if len <= rest.len() - n => {
                    out.extend_from_slice(&START_CODE);
                    out.extend_from_slice(&rest[n..n + len]);
                    rest = &rest[n + len..];
                }
                _ => {
                    return Err(self.decode_error(format!(
                        "sample {i} is corrupt: a NAL unit length runs past the sample's end"
                    )))
                }
            }
        }
        Ok(())
    }
}

impl VideoReader for Mp4Video {
    fn metadata(&self) -> &VideoMetadata {
        &self.meta
    }

    fn read_frames_mapped(
        &mut self,
        indices: &[usize],
        map: FrameMap<'_>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<RgbImage>, VideoError> {
        check_indices(&self.path, indices, self.meta.total_frames)?;
        let n = self.index.samples.len();
        let mut frames = Collector::new(self, indices);
        // Samples that must be decoded at least: up to the last requested one in decode order.
        let needed = frames
            .wanted
            .keys()
            .map(|&d| self.index.decode_of_display[d] + 1)
            .max()
            .unwrap_or(0);
        let mut decoder = H264Decoder::new().map_err(|e| self.decode_error(e))?;
        let (mut raw, mut unit) = (Vec::new(), Vec::new());
        let mut decoded = 0;
        while frames.missing > 0 && decoded < n {
            self.read_access_unit(decoded, &mut raw, &mut unit)?;
            let tag = decoded as u64 + 1;
            let result = decoder.decode(&unit, tag, &mut |tag, yuv| frames.take(tag, yuv, map));
            if let Err(e) = result {
                let frame = frames.display_of_decode[decoded];
                return Err(self.decode_error(format!(
                    "H.264 decoding failed at sample {decoded} (frame {frame}): {e}"
                )));
            }
            if let Some(msg) = frames.failure.take() {
                return Err(self.decode_error(msg));
            }
            decoded += 1;
            progress(decoded.min(needed), needed);
        }
        if frames.missing > 0 {
            let result = decoder.flush(&mut |tag, yuv| frames.take(tag, yuv, map));
            if let Some(msg) = result.err().or(frames.failure.take()) {
                return Err(self.decode_error(format!(
                    "H.264 decoding failed at the end of the stream: {msg}"
                )));
            }
        }
        if let Some((&frame, _)) = frames.wanted.iter().find(|(_, f)| f.is_none()) {
            return Err(self.decode_error(format!(
                "openh264 produced no picture for frame {frame} (sample {}; {} profile)",
                self.index.decode_of_display[frame],
                self.sps.profile_name()
            )));
        }
        Ok(super::in_request_order(indices, frames.wanted))
    }
}

/// Keeps the requested pictures as openh264 returns them, converted to RGB.
struct Collector {
    display_of_decode: Vec<usize>,
    /// Requested display indices → their frame once decoded.
    wanted: BTreeMap<usize, Option<RgbImage>>,
    missing: usize,
    failure: Option<String>,
    width: usize,
    height: usize,
    color: ColorInfo,
}

impl Collector {
    fn new(video: &Mp4Video, indices: &[usize]) -> Self {
        let mut display_of_decode = vec![0; video.index.samples.len()];
        for (d, &s) in video.index.decode_of_display.iter().enumerate() {
            display_of_decode[s] = d;
        }
        let wanted: BTreeMap<_, _> = indices.iter().map(|&i| (i, None)).collect();
        let missing = wanted.len();
        let (width, height, color) = (video.meta.width, video.meta.height, video.sps.color);
        Collector {
            display_of_decode,
            wanted,
            missing,
            failure: None,
            width,
            height,
            color,
        }
    }

    fn take(&mut self, tag: u64, yuv: &Yuv420<'_>, map: FrameMap<'_>) {
        let sample = usize::try_from(tag).ok().and_then(|t| t.checked_sub(1));
        let Some(&display) = sample.and_then(|s| self.display_of_decode.get(s)) else {
            self.failure = Some(format!(
                "openh264 returned a picture with an unknown tag {tag}"
            ));
            return;
        };
        let Some(slot @ None) = self.wanted.get_mut(&display) else {
            return;
        };
        if (yuv.width, yuv.height) != (self.width, self.height) || !yuv.is_consistent() {
            self.failure = Some(format!(
                "frame {display} decoded at {}×{}, the stream declares {}×{} (size changes are not supported)",
                yuv.width, yuv.height, self.width, self.height
            ));
            return;
        }
        *slot = Some(map(yuv420_to_rgb(yuv, self.color)));
        self.missing -= 1;
    }
}

/// The raw `moov` box (header included), for naming codecs the mp4 crate does not parse.
/// A reader that fails once it has served `left` reads and seeks: the `mp4` crate loops on
/// some malformed files, and every loop it can be in reads or seeks.
struct Budgeted<R> {
    inner: R,
    left: u64,
}

impl<R> Budgeted<R> {
    fn spend(&mut self) -> std::io::Result<()> {
        self.left = self.left.checked_sub(1).ok_or_else(|| {
            std::io::Error::other("the MP4 parser reads the same boxes over and over")
        })?;
        Ok(())
    }
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.spend()?;
        self.inner.read(buf)
    }
}

impl<R: Seek> Seek for Budgeted<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.spend()?;
        self.inner.seek(pos)
    }
}

/// Boxes the `mp4` crate descends into; a child of these with a bad size hangs its reader.
const CONTAINERS: [&[u8; 4]; 11] = [
    b"moov", b"trak", b"mdia", b"minf", b"stbl", b"dinf", b"edts", b"mvex", b"udta", b"moof",
    b"traf",
];

/// Every top-level box, and every box inside the containers the `mp4` crate reads, has a size
/// of at least its header that stays inside its parent. (Size 0, "to the end of the file", is
/// valid MP4 but loops the crate; FFmpeg builds read such files.)
fn check_box_sizes(file: &File, len: u64) -> Result<(), String> {
    let mut f = file;
    let mut pos = 0u64;
    while pos + 8 <= len {
        let mut header = [0u8; 16];
        f.seek(SeekFrom::Start(pos))
            .and_then(|_| f.read_exact(&mut header[..8]))
            .map_err(|e| format!("cannot read the box at byte {pos}: {e}"))?;
        let (size, header_len) = match u32::from_be_bytes(header[..4].try_into().unwrap()) {
            1 => {
                f.read_exact(&mut header[8..])
                    .map_err(|e| format!("cannot read the box at byte {pos}: {e}"))?;
                (u64::from_be_bytes(header[8..].try_into().unwrap()), 16)
            }
            s => (u64::from(s), 8),
        };
        let kind = header[4..8].escape_ascii().to_string();
        if size < header_len || size > len - pos {
            return Err(format!(
                "box `{kind}` at byte {pos} has size {size}, outside [{header_len}, {}]",
                len - pos
            ));
        }
        // Every moov and moof: the crate reads each one it meets, not only the first.
        let kind4: [u8; 4] = header[4..8].try_into().unwrap();
        if CONTAINERS.contains(&&kind4) {
            let size = usize::try_from(size)
                .ok()
                .filter(|&s| s <= 256 << 20)
                .ok_or_else(|| format!("the {kind} box at byte {pos} is over 256 MiB"))?;
            let mut body = vec![0u8; size];
            f.seek(SeekFrom::Start(pos))
                .and_then(|_| f.read_exact(&mut body))
                .map_err(|e| format!("cannot read the {kind} box at byte {pos}: {e}"))?;
            children_well_sized(&body[header_len as usize..], 1)?;
        }
        pos += size;
    }
    Ok(())
}

fn children_well_sized(mut data: &[u8], depth: usize) -> Result<(), String> {
    while data.len() >= 8 {
        let (size, header_len) = match u32::from_be_bytes(data[..4].try_into().unwrap()) {
            1 if data.len() >= 16 => (u64::from_be_bytes(data[8..16].try_into().unwrap()), 16),
            1 => return Err("a box header is cut off".into()),
            s => (u64::from(s), 8),
        };
        let kind: [u8; 4] = data[4..8].try_into().unwrap();
        if size < header_len || size > data.len() as u64 {
            return Err(format!(
                "box `{}` has size {size}, outside [{header_len}, {}]",
                kind.escape_ascii(),
                data.len()
            ));
        }
        let (this, rest) = data.split_at(size as usize);
        if CONTAINERS.contains(&&kind) && depth < 16 {
            children_well_sized(&this[header_len as usize..], depth + 1)?;
        }
        data = rest;
    }
    Ok(())
}

fn read_moov(file: &File) -> Option<Vec<u8>> {
    let mut f = file;
    let len = f.metadata().ok()?.len();
    let mut pos = 0u64;
    while pos + 8 <= len {
        f.seek(SeekFrom::Start(pos)).ok()?;
        let mut header = [0u8; 16];
        f.read_exact(&mut header[..8]).ok()?;
        let size = match u32::from_be_bytes(header[..4].try_into().ok()?) {
            0 => len - pos,
            1 => {
                f.read_exact(&mut header[8..]).ok()?;
                u64::from_be_bytes(header[8..].try_into().ok()?)
            }
            s => u64::from(s),
        };
        if size < 8 || pos + size > len {
            return None;
        }
        if &header[4..8] == b"moov" {
            // A moov of more than 256 MiB is not a file this reader handles anyway.
            let size = usize::try_from(size).ok().filter(|&s| s <= 256 << 20)?;
            let mut moov = vec![0u8; size];
            f.seek(SeekFrom::Start(pos)).ok()?;
            f.read_exact(&mut moov).ok()?;
            return Some(moov);
        }
        pos += size;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing: a box of size 0 inside `moov` made the `mp4` crate seek back to the
    /// same box forever. Now one error line, well within the time limit.
    /// Also inside a trak of a second moov box (the crate reads every moov), and a file on
    /// which it rereads boxes forever without any bad size (stopped by the read budget).
    #[test]
    fn a_box_smaller_than_its_header_is_an_error_not_a_hang() {
        for name in [
            "mp4_box_size_zero_in_moov.mp4",
            "mp4_box_size_zero_in_second_moov.mov",
            "mp4_box_in_moof_hangs.mp4",
        ] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fuzz/regressions/video")
                .join(name);
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || tx.send(Mp4Video::open(&path).map(|_| ())));
            let result = rx
                .recv_timeout(std::time::Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("{name}: the fallback MP4 reader hangs"));
            let msg = result.unwrap_err().to_string();
            assert!(msg.contains("malformed video"), "{name}: {msg}");
        }
    }
}

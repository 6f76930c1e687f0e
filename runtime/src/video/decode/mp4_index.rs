//! An MP4 video track's sample index: where each sample lies in the file, and when it is
//! displayed. Timing follows FFmpeg's mov demuxer, which is what PyAV (and so transformers)
//! reports: `average_rate` from the stts table, presentation times from stts + ctts shifted by
//! a simple edit list, the duration from that edit list.

use ::mp4::Mp4Track;

/// One coded sample (an H.264 access unit), in decode order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub offset: u64,
    pub size: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrackIndex {
    /// In decode order.
    pub samples: Vec<Sample>,
    /// `decode_of_display[i]`: the sample shown as the i-th frame.
    pub decode_of_display: Vec<usize>,
    /// Presentation time in seconds of every frame, in display order (moved into the metadata).
    pub frame_times: Vec<f64>,
    /// FFmpeg's `avg_frame_rate`; None when the stts table sums to zero.
    pub fps: Option<f64>,
    /// The presentation's duration in seconds (a simple edit list's, else mdhd's); None when
    /// the headers leave it at zero.
    pub duration_s: Option<f64>,
}

/// Builds the index of `trak`, checking that every sample lies inside a file of `file_len`
/// bytes. `movie_timescale` (mvhd) is the unit of edit-list durations.
pub fn index_track(
    track: &Mp4Track,
    movie_timescale: u32,
    file_len: u64,
) -> Result<TrackIndex, String> {
    let trak = &track.trak;
    let stbl = &trak.mdia.minf.stbl;
    let timescale = trak.mdia.mdhd.timescale;
    if timescale == 0 {
        return Err("the media timescale (mdhd) is zero".into());
    }
    let samples = sample_locations(track, file_len)?;
    let n = samples.len();
    if n == 0 {
        return Err("the video track has no samples".into());
    }

    // Decode times from stts; a table shorter than the sample count repeats its last delta.
    let mut dts = Vec::with_capacity(n);
    let mut t: i64 = 0;
    let mut last_delta: i64 = 0;
    'stts: for e in &stbl.stts.entries {
        last_delta = i64::from(e.sample_delta);
        for _ in 0..e.sample_count {
            if dts.len() == n {
                break 'stts;
            }
            dts.push(t);
            t += last_delta;
        }
    }
    while dts.len() < n {
        dts.push(t);
        t += last_delta;
    }

    // Composition offsets; missing entries mean 0.
    let mut cts = dts.clone();
    if let Some(ctts) = &stbl.ctts {
        let mut i = 0;
        'ctts: for e in &ctts.entries {
            for _ in 0..e.sample_count {
                if i == n {
                    break 'ctts;
                }
                cts[i] += i64::from(e.sample_offset);
                i += 1;
            }
        }
    }

    // Display order: by composition time, ties in decode order (as a stable sort keeps them).
    let mut decode_of_display: Vec<usize> = (0..n).collect();
    decode_of_display.sort_by_key(|&i| cts[i]);

    let edit = simple_edit(track, movie_timescale, timescale);
    let shift = edit.as_ref().map_or(0, |e| e.shift);
    let frame_times = decode_of_display
        .iter()
        .map(|&i| (cts[i] + shift) as f64 / f64::from(timescale))
        .collect();

    // FFmpeg's stream duration: the edit list's when there is one, else the media header's.
    let mdhd_duration = trak.mdia.mdhd.duration;
    let duration_s = match edit {
        Some(e) if e.duration_s > 0.0 => Some(e.duration_s),
        _ => {
            (mdhd_duration > 0 && mdhd_duration != u64::from(u32::MAX) && mdhd_duration != u64::MAX)
                .then(|| mdhd_duration as f64 / f64::from(timescale))
        }
    };
    Ok(TrackIndex {
        samples,
        decode_of_display,
        frame_times,
        fps: average_rate(track, timescale),
        duration_s,
    })
}

/// FFmpeg's `avg_frame_rate` for an mp4 track (mov.c, `mov_read_stts` and `mov_read_trak`):
/// timescale × samples / Σ stts durations, where a lone last entry of an oddly long duration
/// (more than ten average frames, in tracks of over 100 samples) counts as an average frame.
fn average_rate(track: &Mp4Track, timescale: u32) -> Option<f64> {
    let entries = &track.trak.mdia.minf.stbl.stts.entries;
    let (mut duration, mut count): (i64, i64) = (0, 0);
    for (i, e) in entries.iter().enumerate() {
        let mut delta = i64::from(e.sample_delta);
        let samples = i64::from(e.sample_count);
        if i + 1 == entries.len()
            && i > 0
            && samples == 1
            && count > 100
            && delta / 10 > duration / count
        {
            delta = duration / count;
        }
        duration = duration.checked_add(delta.checked_mul(samples)?)?;
        count += samples;
    }
    (duration > 0 && count > 0).then(|| (f64::from(timescale) * count as f64) / duration as f64)
}

/// A simple edit list, as FFmpeg applies it: an optional empty edit (a delay) followed by one
/// edit that starts the presentation at `media_time`.
struct SimpleEdit {
    /// Added to composition times (media time units).
    shift: i64,
    /// The presentation's length in seconds (the edits' durations, in movie time units).
    duration_s: f64,
}

/// The track's edit list if it is simple; other edit lists are not applied (FFmpeg would also
/// drop or repeat frames for them).
fn simple_edit(track: &Mp4Track, movie_timescale: u32, timescale: u32) -> Option<SimpleEdit> {
    let elst = track.trak.edts.as_ref()?.elst.as_ref()?;
    // media_time −1 marks an empty edit; the crate widens version-0 (32-bit) values unsigned.
    let empty = |t: u64| t == u64::MAX || (elst.version == 0 && t == u64::from(u32::MAX));
    let (delay, edit) = match elst.entries.as_slice() {
        [e] => (0, e),
        [d, e] if empty(d.media_time) => (d.segment_duration, e),
        _ => return None,
    };
    if empty(edit.media_time) || edit.media_rate != 1 || movie_timescale == 0 {
        return None;
    }
    let delay_media = i128::from(delay) * i128::from(timescale) / i128::from(movie_timescale);
    let shift = i64::try_from(delay_media - i128::from(edit.media_time)).ok()?;
    let duration_s = (delay as f64 + edit.segment_duration as f64) / f64::from(movie_timescale);
    Some(SimpleEdit { shift, duration_s })
}

/// File offset and size of every sample, from stsz, stsc and stco/co64.
fn sample_locations(track: &Mp4Track, file_len: u64) -> Result<Vec<Sample>, String> {
    let stbl = &track.trak.mdia.minf.stbl;
    let stsz = &stbl.stsz;
    let count = stsz.sample_count as usize;
    if stsz.sample_size == 0 && stsz.sample_sizes.len() != count {
        return Err(format!(
            "stsz lists {} sizes for {count} samples",
            stsz.sample_sizes.len()
        ));
    }
    // A constant size cannot describe more bytes than the file has.
    if u64::from(stsz.sample_size) * count as u64 > file_len {
        return Err(format!(
            "stsz describes {count} samples of {} bytes, more than the file holds",
            stsz.sample_size
        ));
    }
    let size_of = |i: usize| {
        if stsz.sample_size != 0 {
            stsz.sample_size
        } else {
            stsz.sample_sizes[i]
        }
    };
    let chunks: Vec<u64> = match (&stbl.stco, &stbl.co64) {
        (Some(stco), _) => stco.entries.iter().map(|&o| u64::from(o)).collect(),
        (None, Some(co64)) => co64.entries.clone(),
        (None, None) => return Err("the sample table has no chunk offsets (stco/co64)".into()),
    };
    let stsc = &stbl.stsc.entries;
    let mut samples = Vec::with_capacity(count);
    for (k, e) in stsc.iter().enumerate() {
        let first = e.first_chunk as usize;
        let end = stsc
            .get(k + 1)
            .map_or(chunks.len() + 1, |next| next.first_chunk as usize);
        if first == 0 || end < first || end > chunks.len() + 1 {
            return Err(format!(
                "stsc entry {k} names chunks {first}..{end} of {}",
                chunks.len()
            ));
        }
        for &chunk_offset in &chunks[first - 1..end - 1] {
            let mut offset = chunk_offset;
            for _ in 0..e.samples_per_chunk {
                if samples.len() == count {
                    break;
                }
                let size = size_of(samples.len());
                if offset
                    .checked_add(u64::from(size))
                    .is_none_or(|end| end > file_len)
                {
                    return Err(format!(
                        "sample {} ({size} bytes at offset {offset}) lies beyond the end of the file ({file_len} bytes): the file is truncated or corrupt",
                        samples.len()
                    ));
                }
                samples.push(Sample { offset, size });
                offset += u64::from(size);
            }
        }
    }
    if samples.len() != count {
        return Err(format!(
            "the chunk tables place {} of the {count} samples",
            samples.len()
        ));
    }
    Ok(samples)
}

/// The fourcc of the first sample entry (the codec) of the first video track, read from the
/// raw boxes: the mp4 crate keeps only the entries it can parse, so this names the others
/// (hvc1, av01, …) in errors.
pub fn video_codec_fourcc(file: &[u8]) -> Option<[u8; 4]> {
    let moov = child(file, b"moov")?;
    let mut rest = moov;
    while let Some((kind, body, next)) = next_box(rest) {
        rest = next;
        if &kind != b"trak" {
            continue;
        }
        let mdia = child(body, b"mdia")?;
        let hdlr = child(mdia, b"hdlr")?;
        if hdlr.get(8..12) != Some(b"vide") {
            continue;
        }
        let stsd = child(child(child(mdia, b"minf")?, b"stbl")?, b"stsd")?;
        return stsd.get(12..16).and_then(|f| f.try_into().ok());
    }
    None
}

/// The body of the first child box of type `kind`.
fn child<'a>(mut data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    while let Some((k, body, next)) = next_box(data) {
        if &k == kind {
            return Some(body);
        }
        data = next;
    }
    None
}

/// Splits the first box off `data`: (type, body, the rest).
fn next_box(data: &[u8]) -> Option<([u8; 4], &[u8], &[u8])> {
    let size32 = u32::from_be_bytes(data.get(0..4)?.try_into().ok()?);
    let kind: [u8; 4] = data.get(4..8)?.try_into().ok()?;
    let (header, size) = match size32 {
        0 => (8, data.len()),
        1 => (
            16,
            usize::try_from(u64::from_be_bytes(data.get(8..16)?.try_into().ok()?)).ok()?,
        ),
        s => (8, s as usize),
    };
    if size < header || size > data.len() {
        return None;
    }
    Some((kind, &data[header..size], &data[size..]))
}

/// A readable name for an mp4 sample entry fourcc.
pub fn codec_name(fourcc: &[u8; 4]) -> String {
    let tag = String::from_utf8_lossy(fourcc).into_owned();
    let name = match fourcc {
        b"hvc1" | b"hev1" => "HEVC (H.265)",
        b"av01" => "AV1",
        b"vp09" => "VP9",
        b"vp08" => "VP8",
        b"mp4v" => "MPEG-4 Part 2",
        b"avc3" | b"avc4" => "H.264 with in-band parameter sets",
        b"encv" => "encrypted video",
        b"mjpa" | b"mjpb" | b"jpeg" => "Motion JPEG",
        b"apch" | b"apcn" | b"apcs" | b"apco" | b"ap4h" => "ProRes",
        _ => return format!("video codec '{tag}'"),
    };
    format!("{name} ('{tag}')")
}

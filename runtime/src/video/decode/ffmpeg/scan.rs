//! One pass over a stream's packets, none decoded: how many frames it has and when each is
//! shown. For containers that state no frame count, and for presentation-time labels.

use ff::packet::Ref as _;
use ffmpeg_next as ff;

/// Presentation time in seconds of every shown packet of `stream`, in display order. A packet without
/// a pts is placed by its dts (AVI, raw streams); one with neither follows the one before it by
/// the stream's nominal frame duration.
pub(super) fn frame_times(
    input: &mut ff::format::context::Input,
    stream: usize,
) -> Result<Vec<f64>, String> {
    let s = input.stream(stream).expect("an index of this input");
    let tb = f64::from(s.time_base());
    let rate = s.avg_frame_rate();
    let step = if rate.numerator() > 0 && rate.denominator() > 0 {
        1.0 / f64::from(rate)
    } else {
        0.0
    };
    let mut times: Vec<f64> = Vec::new();
    let mut packet = ff::Packet::empty();
    loop {
        match packet.read(input) {
            Ok(()) => {}
            Err(ff::Error::Eof) => break,
            Err(e) => return Err(format!("cannot read a packet: {e}")),
        }
        // SAFETY: a packet that was just read.
        let flags = unsafe { (*packet.as_ptr()).flags };
        // An edit list can mark packets to be decoded but never shown.
        if packet.stream() != stream || flags & ff::ffi::AV_PKT_FLAG_DISCARD != 0 {
            continue;
        }
        let t = match packet.pts().or(packet.dts()) {
            Some(ts) => ts as f64 * tb,
            None => times.last().map_or(0.0, |t| t + step),
        };
        times.push(t);
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

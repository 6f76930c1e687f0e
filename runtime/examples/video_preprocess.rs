//! `vl3c preprocess --video FILE --num-frames N --out OUT` without the CLI crate: decode,
//! sample and preprocess one video with the processor's class defaults, write the tensors.
//! tools/bench/video_decode_bench.sh can run it (`VL3C_EXAMPLE=1`) where the full binary is
//! not built.

use vl3c_runtime::video::{load_video, VideoProcessorConfig, VideoRequest};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, path, n, out] = &args[..] else {
        eprintln!("usage: video_preprocess FILE NUM_FRAMES OUT");
        std::process::exit(2);
    };
    let request = VideoRequest {
        num_frames: Some(n.parse().expect("a frame count")),
        ..Default::default()
    };
    let cfg = VideoProcessorConfig::default();
    let start = std::time::Instant::now();
    let video = load_video(path.as_ref(), &cfg, &request, &mut |_, _| {}).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let p = &video.processed;
    std::fs::write(out, p.to_safetensors_bytes().expect("tensors")).expect("written");
    eprintln!(
        "preprocess: {} frames, grid {:?}, {} patches, {:.2} s",
        video.metadata.total_frames,
        p.grid_thw[0],
        p.pixel_values.len() / p.patch_dim,
        start.elapsed().as_secs_f64()
    );
}

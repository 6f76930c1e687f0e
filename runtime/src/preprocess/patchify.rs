//! Rescale + normalize (fused, f32) and patchify (spec §3.1 steps 4–5).

/// `(x - 127.5) / 127.5` in f32: transformers fuses rescale (1/255) and
/// normalize (mean = std = 0.5) into mean' = std' = 0.5·255 = 127.5 and
/// torchvision's `normalize` does `x.sub_(mean).div_(std)` in f32.
#[inline]
pub fn normalize_u8(x: u8) -> f32 {
    (x as f32 - 127.5f32) / 127.5f32
}

/// The 256 possible normalized values.
pub fn normalize_table() -> [f32; 256] {
    let mut t = [0f32; 256];
    for (i, v) in t.iter_mut().enumerate() {
        *v = normalize_u8(i as u8);
    }
    t
}

/// Appends the patches of one resized RGB image (HWC u8, `h`×`w`, both
/// multiples of `patch_size * merge_size`) to `out`, normalized.
///
/// Rows are in merge-block-major order (block row, block col, in-block row,
/// in-block col); each row is flattened as (c, ky, kx), length 3·p·p.
/// Returns (grid_h, grid_w).
pub fn patchify_into(
    img: &[u8],
    h: usize,
    w: usize,
    patch_size: usize,
    merge_size: usize,
    out: &mut Vec<f32>,
) -> (usize, usize) {
    let p = patch_size;
    let m = merge_size;
    assert_eq!(img.len(), h * w * 3);
    assert!(
        h.is_multiple_of(p * m) && w.is_multiple_of(p * m),
        "{h}x{w} is not a multiple of {}",
        p * m
    );
    let (gh, gw) = (h / p, w / p);
    let table = normalize_table();
    out.reserve(gh * gw * 3 * p * p);
    for bi in 0..gh / m {
        for bj in 0..gw / m {
            for ii in 0..m {
                for jj in 0..m {
                    let py = (bi * m + ii) * p;
                    let px = (bj * m + jj) * p;
                    for c in 0..3 {
                        for ky in 0..p {
                            let row = (py + ky) * w;
                            for kx in 0..p {
                                out.push(table[img[(row + px + kx) * 3 + c] as usize]);
                            }
                        }
                    }
                }
            }
        }
    }
    (gh, gw)
}

//! `weights.bin` read into memory at load, each tensor in an allocation of its own (64-byte
//! aligned), the decode step's matmul weights allocated first and in the order a step reads
//! them; the file's sha256 is checked on the way.
//!
//! Why not map the file: decode streams every matmul weight once per token and is bound by how
//! fast that stream runs. On the development VM (2 vCPUs, back-to-back A/B runs, several times)
//! a decode step's 3.1 GB of GEMVs ran at 21–24 GB/s over the page cache's pages of the mapped
//! file, 24–26 GB/s over an anonymous copy of the whole file in file order, and 28.5–30 GB/s
//! with the decode weights packed together in reading order (the file interleaves them with the
//! vision weights' placement and small tensors). The read costs one sequential pass, which the
//! checksum needed anyway; the weights are private to the process instead of shared through the
//! page cache. [`Weights::bytes`] maps a plan entry (file offset) to its place here.

use super::{file_err, Error};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use vl3c_cpu::plan::{Plan, WEIGHTS};
use vl3c_engine::{Manifest, TensorEntry};

/// Bytes read and hashed at a time.
const CHUNK: usize = 16 << 20;

/// One 64-byte line: the unit of a tensor's allocation, so every tensor starts on a cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

pub(crate) struct Weights {
    /// File offset of each tensor → its bytes, in an allocation of its own.
    tensors: HashMap<u64, Vec<Line>>,
    /// The offsets placed first (the decode step's matmul weights), in reading order.
    first: Vec<u64>,
}

impl Weights {
    /// The stored bytes of `e` (a tensor of the plan these weights were read with).
    pub(crate) fn bytes(&self, e: &TensorEntry) -> &[u8] {
        let lines = &self.tensors[&e.offset];
        // SAFETY: `Line` is 64 plain bytes without padding; the allocation holds ≥ `e.bytes`.
        unsafe { std::slice::from_raw_parts(lines.as_ptr() as *const u8, e.bytes as usize) }
    }

    /// The first tensors in reading order (the decode step's weights, as it streams them), up to
    /// `max_bytes` in whole allocations, as 64-bit words: what a read-bandwidth probe reads
    /// without allocating a buffer of its own.
    pub(crate) fn leading_words(&self, max_bytes: usize) -> Vec<&[u64]> {
        let mut left = max_bytes;
        let mut out = Vec::new();
        for o in &self.first {
            let Some(lines) = self.tensors.get(o) else {
                continue;
            };
            if left == 0 {
                break;
            }
            let take = lines.len().min(left.div_ceil(64));
            left = left.saturating_sub(take * 64);
            // SAFETY: `Line` is 64 plain bytes (8 aligned u64) without padding.
            out.push(unsafe { std::slice::from_raw_parts(lines.as_ptr() as *const u64, take * 8) });
        }
        out
    }

    /// Reads `dir/weights.bin` after checking its size; places the tensors of `plan` (the
    /// ones at file offsets `first` first, in that order) and checks the file's sha256 against
    /// `manifest`. The hashing runs on a second thread, a chunk behind the read.
    pub(crate) fn read(
        dir: &Path,
        manifest: &Manifest,
        plan: &Plan,
        first: &[u64],
    ) -> Result<Weights, Error> {
        let path = dir.join(WEIGHTS);
        let mut file =
            std::fs::File::open(&path).map_err(|e| file_err(&path, format!("cannot open: {e}")))?;
        let len = file
            .metadata()
            .map_err(|e| file_err(&path, format!("cannot stat: {e}")))?
            .len();
        manifest.check_size(dir, WEIGHTS, len)?;

        let mut spans: Vec<(u64, u64)> =
            plan.tensors.values().map(|e| (e.offset, e.bytes)).collect();
        spans.sort_unstable();
        spans.dedup();
        if let Some(&(o, b)) = spans
            .iter()
            .find(|&&(o, b)| o.checked_add(b).is_none_or(|end| end > len))
        {
            return Err(file_err(
                &path,
                format!("a tensor at offset {o} ({b} bytes) lies outside the file"),
            ));
        }
        // One allocation per tensor, `first` allocated first, then the rest in file order.
        let size: HashMap<u64, u64> = spans.iter().copied().collect();
        let mut tensors: HashMap<u64, Vec<Line>> = HashMap::new();
        for o in first
            .iter()
            .copied()
            .filter(|o| size.contains_key(o))
            .chain(spans.iter().map(|s| s.0))
        {
            tensors
                .entry(o)
                .or_insert_with(|| zeroed_lines((size[&o] as usize).div_ceil(64)));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
        let sha = std::thread::scope(|s| {
            let hasher = s.spawn(move || {
                let mut h = Sha256::new();
                for chunk in rx {
                    h.update(&chunk);
                }
                format!("{:x}", h.finalize())
            });
            // Tensors by file offset; `next` is the first one not yet entirely copied.
            let mut next = 0;
            let mut start = 0u64;
            while start < len {
                let n = CHUNK.min((len - start) as usize);
                let mut chunk = vec![0u8; n];
                file.read_exact(&mut chunk)
                    .map_err(|e| file_err(&path, format!("cannot read: {e}")))?;
                let end = start + n as u64;
                let mut i = next;
                while i < spans.len() && spans[i].0 < end {
                    let (o, b) = spans[i];
                    let (from, to) = (o.max(start), (o + b).min(end));
                    if from < to {
                        let t = tensors.get_mut(&o).expect("allocated above");
                        // SAFETY: `Line` is 64 plain bytes; the allocation holds ≥ `b` bytes.
                        let t = unsafe {
                            std::slice::from_raw_parts_mut(t.as_mut_ptr() as *mut u8, b as usize)
                        };
                        t[(from - o) as usize..(to - o) as usize].copy_from_slice(
                            &chunk[(from - start) as usize..(to - start) as usize],
                        );
                    }
                    if o + b <= end && i == next {
                        next += 1;
                    }
                    i += 1;
                }
                if tx.send(chunk).is_err() {
                    break;
                }
                start = end;
            }
            drop(tx);
            Ok::<_, Error>(hasher.join().expect("the weights hashing thread"))
        })?;
        manifest.check_sha256(dir, WEIGHTS, &sha)?;
        let first = first
            .iter()
            .copied()
            .filter(|o| size.contains_key(o))
            .collect();
        Ok(Weights { tensors, first })
    }
}

/// `n` zeroed lines from the allocator's zeroed path (fresh pages come zeroed from the kernel,
/// so the 3.9 GB of a 2B model's weights are not cleared once before being overwritten).
fn zeroed_lines(n: usize) -> Vec<Line> {
    if n == 0 {
        return Vec::new();
    }
    let layout = std::alloc::Layout::array::<Line>(n).expect("tensor size fits the address space");
    // SAFETY: the layout is non-zero; all-zero bytes are a valid `Line`; the Vec takes the
    // allocation with the layout it was made with (capacity n, align 64), from the global
    // allocator it will free it with.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout) as *mut Line;
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Vec::from_raw_parts(p, n, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use vl3c_engine::{sha256_hex, FileEntry, Source, TensorLayout};

    fn entry(offset: u64, bytes: u64) -> TensorEntry {
        TensorEntry {
            offset,
            bytes,
            dtype: "bf16".into(),
            shape: vec![bytes as usize / 2],
            layout: TensorLayout::Raw,
        }
    }

    fn manifest(bytes: &[u8]) -> Manifest {
        let files = BTreeMap::from([(
            WEIGHTS.to_string(),
            FileEntry {
                bytes: bytes.len() as u64,
                sha256: sha256_hex(bytes),
            },
        )]);
        Manifest {
            format_version: 0,
            target: "cpu".into(),
            cpu_features: Vec::new(),
            cpu_features_optional: Vec::new(),
            vl3c_version: String::new(),
            source: Source {
                config_sha256: String::new(),
                files: BTreeMap::new(),
            },
            files,
        }
    }

    #[test]
    fn every_tensor_reads_back_whatever_the_placement() {
        let dir = tempfile::tempdir().unwrap();
        // Three tensors, one spanning a read chunk boundary.
        let len = CHUNK + 4096;
        let file: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(dir.path().join(WEIGHTS), &file).unwrap();
        let mut plan = Plan::default();
        let spans = [
            (0u64, 128u64),
            (CHUNK as u64 - 64, 192),
            (CHUNK as u64 + 1024, 2048),
        ];
        for (i, &(o, b)) in spans.iter().enumerate() {
            plan.tensors.insert(format!("t{i}"), entry(o, b));
        }
        let w = Weights::read(
            dir.path(),
            &manifest(&file),
            &plan,
            &[spans[2].0, spans[1].0],
        )
        .unwrap();
        for &(o, b) in &spans {
            let got = w.bytes(&entry(o, b));
            assert_eq!(got, &file[o as usize..(o + b) as usize]);
            assert_eq!(got.as_ptr() as usize % 64, 0);
        }
        let mut bad = file.clone();
        bad[100] ^= 1;
        let err = Weights::read(dir.path(), &manifest(&bad), &plan, &[])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
    }
}

//! What a case measured, and the summary table and JSON `vl3c test-kernels` prints.

use crate::emu::DeviceBuffer;
use crate::kir::Ty;
use crate::templates::Case;
use serde::Serialize;
use vl3c_reference::Tensor;

#[derive(Clone, Debug, Serialize)]
pub struct OutputCheck {
    pub name: String,
    /// Σ(out − ref)² / Σ ref²; for integer outputs, the fraction of elements that differ.
    pub nmse: f64,
    pub limit: f64,
    pub max_abs_err: f64,
    /// Elements non-finite on the device where the reference is finite.
    pub non_finite: usize,
}

impl OutputCheck {
    pub fn compare(name: &str, want: &Tensor, got: &DeviceBuffer, limit: f64) -> OutputCheck {
        let mut check = OutputCheck {
            name: name.into(),
            nmse: 0.0,
            limit,
            max_abs_err: 0.0,
            non_finite: 0,
        };
        if want.dtype().is_float() {
            let (w, g) = (want.as_f32(), got.to_f32());
            let (mut err, mut norm) = (0f64, 0f64);
            for (&w, &g) in w.iter().zip(&g) {
                if w.is_finite() && !g.is_finite() {
                    check.non_finite += 1;
                    continue;
                }
                let d = (g as f64 - w as f64).abs();
                if d.is_finite() {
                    err += d * d;
                    check.max_abs_err = check.max_abs_err.max(d);
                }
                norm += (w as f64) * (w as f64);
            }
            check.nmse = if norm > 0.0 { err / norm } else { err };
        } else {
            let (w, g) = (want.to_i64_vec(), got.to_i64());
            let wrong = w.iter().zip(&g).filter(|(a, b)| a != b).count();
            check.nmse = wrong as f64 / w.len().max(1) as f64;
            check.limit = 0.0;
            check.max_abs_err = w
                .iter()
                .zip(&g)
                .map(|(a, b)| (a - b).unsigned_abs() as f64)
                .fold(0.0, f64::max);
        }
        if got.len() != want.numel() {
            check.nmse = f64::INFINITY;
        }
        check
    }

    /// [`OutputCheck::compare`] of an output read back from a device: `bytes` are its elements
    /// of type `elem`, little-endian.
    pub fn compare_bytes(
        name: &str,
        want: &Tensor,
        elem: Ty,
        bytes: &[u8],
        limit: f64,
    ) -> OutputCheck {
        let size = elem.size();
        let mut got = DeviceBuffer::new(elem, bytes.len() / size);
        for (i, chunk) in bytes.chunks_exact(size).enumerate() {
            let mut le = [0u8; 8];
            le[..size].copy_from_slice(chunk);
            got.set_bits(i, u64::from_le_bytes(le));
        }
        OutputCheck::compare(name, want, &got, limit)
    }

    pub fn passed(&self) -> bool {
        self.non_finite == 0 && self.nmse <= self.limit
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct CaseReport {
    pub op: String,
    pub case: String,
    pub passed: bool,
    pub error: Option<String>,
    pub outputs: Vec<OutputCheck>,
    pub launches: usize,
    /// Thread-statements the emulator executed (0 on a GPU).
    pub thread_statements: u64,
    pub seconds: f64,
}

impl CaseReport {
    pub fn new(case: &Case) -> CaseReport {
        CaseReport {
            op: case.template.op().into(),
            case: case.label(),
            passed: false,
            error: None,
            outputs: Vec::new(),
            launches: 0,
            thread_statements: 0,
            seconds: 0.0,
        }
    }

    /// `  OK   rms_norm(dtype=f32,hidden=1536) rows=7   nmse 3.1e-15 (limit 1e-7)  2 launches 0.01 s`
    pub fn line(&self) -> String {
        let status = if self.passed { "OK  " } else { "FAIL" };
        let detail = match &self.error {
            Some(e) => e.clone(),
            None => self
                .outputs
                .iter()
                .map(|o| {
                    let nf = if o.non_finite > 0 {
                        format!(", {} non-finite", o.non_finite)
                    } else {
                        String::new()
                    };
                    format!("{} nmse {:.2e} (limit {:.0e}{nf})", o.name, o.nmse, o.limit)
                })
                .collect::<Vec<_>>()
                .join("; "),
        };
        format!(
            "  {status} {}  {detail}  [{} launches, {:.2} s]",
            self.case, self.launches, self.seconds
        )
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Where the cases ran: the emulator, or the GPU and the image its kernels came from.
    pub device: String,
    pub reports: Vec<CaseReport>,
    pub seconds: f64,
}

impl Summary {
    pub fn passed(&self) -> usize {
        self.reports.iter().filter(|r| r.passed).count()
    }

    pub fn failed(&self) -> usize {
        self.reports.len() - self.passed()
    }

    pub fn launches(&self) -> usize {
        self.reports.iter().map(|r| r.launches).sum()
    }

    /// The closing line, in the plain form CI logs read: `test-kernels: 12 passed, 0 failed`.
    pub fn closing_line(&self) -> String {
        format!(
            "test-kernels: {} passed, {} failed ({} launches in {:.1} s, {:.0} kernels/s)",
            self.passed(),
            self.failed(),
            self.launches(),
            self.seconds,
            self.launches() as f64 / self.seconds.max(1e-9)
        )
    }
}

//! Case inputs: uniform floats in [-1, 1] from a generator seeded by the case label, so a
//! failure reproduces with the same values; integer inputs come from the template.

use crate::templates::{Sizes, Template};
use vl3c_ir::DType;
use vl3c_reference::{Tensor, TensorData};

/// xorshift64*: small, seedable, and the same on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn for_label(label: &str) -> Rng {
        // FNV-1a of the label; never zero, which xorshift cannot leave.
        let h = label.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        Rng(h | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

pub fn generate(
    t: &dyn Template,
    name: &str,
    dtype: DType,
    shape: Vec<usize>,
    sizes: &Sizes,
    rng: &mut Rng,
) -> Result<Tensor, String> {
    let n: usize = shape.iter().product();
    let data = if dtype.is_float() {
        TensorData::from_f32(dtype, (0..n).map(|_| rng.uniform()).collect())
    } else {
        let v = t
            .int_input(name, sizes)
            .ok_or_else(|| format!("template gives no values for its {dtype} input `{name}`"))?;
        if v.len() != n {
            return Err(format!(
                "template gives {} values for `{name}`, which holds {n}",
                v.len()
            ));
        }
        TensorData::from_i64(dtype, v)
    };
    Tensor::new(shape, data)
}

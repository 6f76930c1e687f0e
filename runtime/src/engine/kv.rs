//! The engine's KV cache: per cache name one f32 buffer allocated once per sequence from
//! `--max-context` (zero pages, so untouched capacity costs no memory), into which the claimed
//! `cache_append` writes the new rows in place and from which the claimed attention reads the
//! first `len` positions through strides. Values are kept as `[heads, capacity, d]`; keys as
//! `[heads, d, capacity]` (capacity rounded up to 16), the layout the attention kernel's score
//! product reads, so a decode step transposes nothing. The reference semantics (a cache is a
//! tensor, `cache_append` returns a longer copy) stay the executor's.

use crate::exec::{CacheSource, Tensor};
use std::cell::{Ref, RefCell};
use std::collections::HashMap;
use vl3c_cpu::attention::{rotate, Keys, View};
use vl3c_ir::DType;

pub(crate) struct CacheBuf {
    data: Vec<f32>,
    heads: usize,
    cap: usize,
    d: usize,
    len: usize,
    /// Keys, stored `[heads, d, stride]`.
    transposed: bool,
    /// Positions per row of a transposed buffer (`cap` rounded up to 16).
    stride: usize,
}

impl CacheBuf {
    fn new(heads: usize, d: usize, cap: usize, transposed: bool) -> CacheBuf {
        let stride = if transposed {
            cap.div_ceil(16) * 16
        } else {
            cap
        };
        CacheBuf {
            data: vec![0.0; heads * d * stride],
            heads,
            cap,
            d,
            len: 0,
            transposed,
            stride,
        }
    }

    /// The first `len` positions of every head, as the attention kernel reads keys.
    pub(crate) fn keys(&self) -> Keys<'_> {
        match self.transposed {
            true => Keys::Transposed(View {
                data: &self.data,
                heads: self.heads,
                len: self.len,
                d: self.d,
                head_stride: self.d * self.stride,
                row_stride: self.stride,
            }),
            false => Keys::Rows(self.rows()),
        }
    }

    /// The first `len` positions of every head as rows (a values cache).
    pub(crate) fn values(&self) -> Result<View<'_>, String> {
        match self.transposed {
            false => Ok(self.rows()),
            true => Err("a keys cache is read as values".into()),
        }
    }

    fn rows(&self) -> View<'_> {
        View {
            data: &self.data,
            heads: self.heads,
            len: self.len,
            d: self.d,
            head_stride: self.cap * self.d,
            row_stride: self.d,
        }
    }

    /// Writes row `j` (`d` values) of head `h` at position `pos`.
    fn put(&mut self, h: usize, pos: usize, row: &[f32]) {
        if self.transposed {
            let base = h * self.d * self.stride + pos;
            for (c, &x) in row.iter().enumerate() {
                self.data[base + c * self.stride] = x;
            }
        } else {
            let at = (h * self.cap + pos) * self.d;
            self.data[at..at + self.d].copy_from_slice(row);
        }
    }

    /// Appends `rows` (`[heads, s, d]`) after the last position; the new shape.
    fn append(&mut self, rows: &Tensor) -> Result<Vec<usize>, String> {
        let [h, s, d] = rows.shape[..] else {
            return Err(format!("new rows {:?} are not [heads, len, d]", rows.shape));
        };
        if h != self.heads || d != self.d {
            return Err(format!(
                "new rows {:?} do not fit a cache of {} heads × {}",
                rows.shape, self.heads, self.d
            ));
        }
        if self.len + s > self.cap {
            return Err(format!(
                "{} positions exceed the KV cache's capacity {} (--max-context)",
                self.len + s,
                self.cap
            ));
        }
        let v = rows.as_f32();
        for head in 0..h {
            for j in 0..s {
                self.put(
                    head,
                    self.len + j,
                    &v[(head * s + j) * d..(head * s + j + 1) * d],
                );
            }
        }
        self.len += s;
        Ok(vec![h, self.len, d])
    }
}

/// One cache the engine keeps: its name, heads and head size, and whether attention reads it
/// as keys.
#[derive(Clone, Debug)]
pub(crate) struct CacheSpec {
    pub name: String,
    pub heads: usize,
    pub d: usize,
    pub keys: bool,
}

/// Every cache of one sequence.
pub(crate) struct KvStore {
    caches: RefCell<HashMap<String, CacheBuf>>,
}

impl KvStore {
    /// Empty caches, each with room for `cap` positions.
    pub(crate) fn new(specs: &[CacheSpec], cap: usize) -> KvStore {
        let caches = specs
            .iter()
            .map(|c| (c.name.clone(), CacheBuf::new(c.heads, c.d, cap, c.keys)))
            .collect();
        KvStore {
            caches: RefCell::new(caches),
        }
    }

    pub(crate) fn borrow(&self) -> Ref<'_, HashMap<String, CacheBuf>> {
        self.caches.borrow()
    }

    /// Appends to cache `name` (see [`CacheBuf::append`]).
    pub(crate) fn append(&self, name: &str, rows: &Tensor) -> Result<Vec<usize>, String> {
        let mut caches = self.caches.borrow_mut();
        let c = caches
            .get_mut(name)
            .ok_or_else(|| format!("the engine keeps no cache `{name}`"))?;
        c.append(rows)
    }

    /// Appends `[heads, s, d]` rows read through `view` (heads and d must be the cache's),
    /// rotated by the RoPE tables `[s, d]` when given.
    pub(crate) fn append_view(
        &self,
        name: &str,
        view: View,
        rope: Option<(&[f32], &[f32])>,
    ) -> Result<Vec<usize>, String> {
        let mut caches = self.caches.borrow_mut();
        let c = caches
            .get_mut(name)
            .ok_or_else(|| format!("the engine keeps no cache `{name}`"))?;
        let (h, s, d) = (view.heads, view.len, view.d);
        if h != c.heads || d != c.d {
            return Err(format!(
                "new rows [{h}, {s}, {d}] do not fit a cache of {} heads × {}",
                c.heads, c.d
            ));
        }
        if c.len + s > c.cap {
            return Err(format!(
                "{} positions exceed the KV cache's capacity {} (--max-context)",
                c.len + s,
                c.cap
            ));
        }
        if rope.is_some_and(|(cos, sin)| cos.len() != s * d || sin.len() != s * d) {
            return Err(format!("rope tables are not [{s}, {d}]"));
        }
        let mut rotated = vec![0f32; d];
        for head in 0..h {
            for j in 0..s {
                let src = &view.data[head * view.head_stride + j * view.row_stride..][..d];
                let row = match rope {
                    Some((cos, sin)) => {
                        rotate(
                            src,
                            &cos[j * d..(j + 1) * d],
                            &sin[j * d..(j + 1) * d],
                            &mut rotated,
                        );
                        &rotated
                    }
                    None => src,
                };
                let pos = c.len + j;
                c.put(head, pos, row);
            }
        }
        c.len += s;
        Ok(vec![h, c.len, d])
    }

    /// Every cache's length, to restore after a failed run (which may have appended to some).
    pub(crate) fn lens(&self) -> Vec<(String, usize)> {
        self.caches
            .borrow()
            .iter()
            .map(|(n, c)| (n.clone(), c.len))
            .collect()
    }

    pub(crate) fn restore(&self, lens: &[(String, usize)]) {
        let mut caches = self.caches.borrow_mut();
        for (n, len) in lens {
            if let Some(c) = caches.get_mut(n) {
                c.len = *len;
            }
        }
    }
}

impl CacheSource for KvStore {
    fn shape(&self, name: &str) -> Option<(DType, Vec<usize>)> {
        self.caches
            .borrow()
            .get(name)
            .map(|c| (DType::F32, vec![c.heads, c.len, c.d]))
    }

    fn tensor(&self, _: &str) -> Option<&Tensor> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, keys: bool) -> CacheSpec {
        CacheSpec {
            name: name.into(),
            heads: 2,
            d: 4,
            keys,
        }
    }

    /// `[2, s, 4]` rows whose values encode (head, position, column).
    fn rows(s: usize, from: usize) -> Tensor {
        let v = (0..2 * s * 4)
            .map(|i| ((i / (s * 4)) * 1000 + (from + i / 4 % s) * 10 + i % 4) as f32)
            .collect();
        Tensor::f32(vec![2, s, 4], v)
    }

    fn element(k: &View, transposed: bool, h: usize, j: usize, c: usize) -> f32 {
        let at = if transposed {
            h * k.head_stride + c * k.row_stride + j
        } else {
            h * k.head_stride + j * k.row_stride + c
        };
        k.data[at]
    }

    #[test]
    fn appends_in_place_in_both_layouts_and_restores() {
        let store = KvStore::new(&[spec("k", true), spec("v", false)], 5);
        assert_eq!(store.shape("k"), Some((DType::F32, vec![2, 0, 4])));
        assert_eq!(store.append("k", &rows(3, 0)).unwrap(), vec![2, 3, 4]);
        assert_eq!(store.append("v", &rows(3, 0)).unwrap(), vec![2, 3, 4]);
        let lens = store.lens();
        store.append("k", &rows(2, 3)).unwrap();
        {
            let caches = store.borrow();
            let Keys::Transposed(k) = caches["k"].keys() else {
                panic!("keys are kept transposed")
            };
            assert!(k.row_stride >= 16 && k.len == 5);
            for (h, j, c) in [(0, 0, 0), (1, 4, 3), (1, 2, 1)] {
                assert_eq!(element(&k, true, h, j, c), (h * 1000 + j * 10 + c) as f32);
            }
            let v = caches["v"].values().unwrap();
            assert_eq!(element(&v, false, 1, 2, 3), 1023.0);
            let err = caches["k"]
                .values()
                .expect_err("a keys cache is not values");
            assert!(err.contains("keys cache is read as values"), "{err}");
        }
        store.restore(&lens);
        assert_eq!(store.shape("k"), Some((DType::F32, vec![2, 3, 4])));
        assert!(store.tensor("k").is_none());
    }

    #[test]
    fn capacity_and_shape_are_checked() {
        let store = KvStore::new(&[spec("v", false)], 4);
        let err = store.append("v", &rows(5, 0)).unwrap_err();
        assert!(err.contains("capacity 4"), "{err}");
        let err = store
            .append("v", &Tensor::f32(vec![3, 1, 4], vec![0.0; 12]))
            .unwrap_err();
        assert!(err.contains("do not fit"), "{err}");
        let err = store.append("x", &rows(1, 0)).unwrap_err();
        assert!(err.contains("no cache `x`"), "{err}");
    }

    #[test]
    fn view_appends_rotate_like_the_reference() {
        // Rows [heads 2 × d 4] for one position, as columns of a [1, 8] projection.
        let x: Vec<f32> = (1..=8).map(|i| i as f32).collect();
        let view = View {
            data: &x,
            heads: 2,
            len: 1,
            d: 4,
            head_stride: 4,
            row_stride: 8,
        };
        let (cos, sin) = ([0.5f32, 0.25, 0.5, 0.25], [2.0f32, 3.0, 2.0, 3.0]);
        let store = KvStore::new(&[spec("v", false)], 2);
        store.append_view("v", view, Some((&cos, &sin))).unwrap();
        let caches = store.borrow();
        let v = caches["v"].values().unwrap();
        // Head 0: x = [1, 2, 3, 4]: x·cos + rotate_half(x)·sin, rotate_half = [-3, -4, 1, 2].
        let want = [
            1.0 * 0.5 - 3.0 * 2.0,
            2.0 * 0.25 - 4.0 * 3.0,
            3.0 * 0.5 + 1.0 * 2.0,
            4.0 * 0.25 + 2.0 * 3.0,
        ];
        assert_eq!(&v.data[..4], &want);
    }
}

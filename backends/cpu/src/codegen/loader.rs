//! Loads the kernels' object file without a linker or Cranelift: parse the ELF with `object`,
//! copy the allocatable sections (code, read-only data) into one anonymous mapping, apply the
//! relocations, flip the mapping to read+execute, and hand out function pointers by kernel index.
//!
//! Relocations: Cranelift puts each function's constant pool in its own code (RIP-relative on
//! x86-64, no relocation), and the kernels call nothing, so the objects [`compile_kernels`]
//! makes have none today (the tests check). The loader still applies the forms a self-contained
//! object can hold — `R_X86_64_64` (absolute 64), `R_X86_64_PC32`/`PLT32` and their 64-bit or
//! generic equivalents (PC-relative to a symbol or section inside the object) — so a future
//! Cranelift that moves constants to `.rodata` keeps loading. Anything else (an undefined symbol,
//! a GOT access, an unknown kind) is an error, as is every other malformation: nothing panics.
//!
//! [`compile_kernels`]: super::compile_kernels

use super::{CodegenError, KernelSpec};
use memmap2::{Mmap, MmapMut};
use object::{
    Object, ObjectKind, ObjectSection, ObjectSymbol, RelocationEncoding, RelocationKind,
    RelocationTarget, SectionIndex, SectionKind, SymbolKind,
};

pub type LayerNormFn =
    unsafe extern "C" fn(out: *mut f32, x: *const f32, w: *const f32, b: *const f32, rows: i64);
pub type RmsNormFn = unsafe extern "C" fn(out: *mut f32, x: *const f32, w: *const f32, rows: i64);
pub type SoftmaxFn = unsafe extern "C" fn(out: *mut f32, x: *const f32, rows: i64);
pub type RopeFn = unsafe extern "C" fn(
    out: *mut f32,
    x: *const f32,
    cos: *const f32,
    sin: *const f32,
    rows: i64,
    table_rows: i64,
);
/// `gelu_tanh`, `gelu_erf`, `silu`.
pub type UnaryFn = unsafe extern "C" fn(out: *mut f32, x: *const f32, n: i64);
/// `swiglu` (`a` = gate, `b` = up) and `add`.
pub type BinaryFn = unsafe extern "C" fn(out: *mut f32, a: *const f32, b: *const f32, n: i64);
pub type AddBiasFn =
    unsafe extern "C" fn(out: *mut f32, x: *const f32, bias: *const f32, rows: i64);
pub type AttentionSoftmaxFn = unsafe extern "C" fn(
    s: *mut f32,
    seg_q: *const i64,
    seg_k: *const i64,
    rows: i64,
    cols: i64,
    offset: i64,
);

const KINDS: [&str; 11] = [
    "layer_norm",
    "rms_norm",
    "softmax",
    "rope",
    "gelu_tanh",
    "gelu_erf",
    "silu",
    "swiglu",
    "add",
    "add_bias",
    "attention_softmax",
];

fn bad(msg: impl Into<String>) -> CodegenError {
    CodegenError::Object(msg.into())
}

/// Where each loaded section goes in the mapping, what to patch, and where each kernel starts.
struct Plan {
    /// `(section, offset in the mapping)` for every section copied.
    sections: Vec<(SectionIndex, usize)>,
    size: usize,
    /// Patches to apply once the mapping's base address is known.
    relocs: Vec<Patch>,
    /// Offset of kernel i in the mapping, its kind, and the constants its symbol carries.
    kernels: Vec<(usize, &'static str, String)>,
}

struct Patch {
    /// Offset of the patched bytes in the mapping.
    place: usize,
    /// Offset of the target in the mapping.
    target: usize,
    addend: i64,
    relative: bool,
    bits: u8,
}

fn loaded(kind: SectionKind) -> bool {
    matches!(
        kind,
        SectionKind::Text
            | SectionKind::ReadOnlyData
            | SectionKind::ReadOnlyDataWithRel
            | SectionKind::ReadOnlyString
            | SectionKind::Data
            | SectionKind::UninitializedData
    )
}

fn host_arch() -> Option<object::Architecture> {
    match std::env::consts::ARCH {
        "x86_64" => Some(object::Architecture::X86_64),
        "aarch64" => Some(object::Architecture::Aarch64),
        "riscv64" => Some(object::Architecture::Riscv64),
        "s390x" => Some(object::Architecture::S390x),
        _ => None,
    }
}

fn plan(file: &object::File) -> Result<Plan, CodegenError> {
    if file.kind() != ObjectKind::Relocatable {
        return Err(bad(format!(
            "expected a relocatable object, got {:?}",
            file.kind()
        )));
    }
    if Some(file.architecture()) != host_arch()
        || !file.is_64()
        || file.is_little_endian() != cfg!(target_endian = "little")
    {
        return Err(bad(format!(
            "object is for {:?}, not this host ({})",
            file.architecture(),
            std::env::consts::ARCH
        )));
    }
    let mut sections = Vec::new();
    let mut size = 0usize;
    for s in file.sections() {
        if !loaded(s.kind()) || s.size() == 0 {
            continue;
        }
        let align = s.align().max(1);
        if !align.is_power_of_two() || align > 4096 {
            return Err(bad(format!(
                "section {} has alignment {align}",
                s.name().unwrap_or("?")
            )));
        }
        let align = align as usize;
        let len = usize::try_from(s.size()).map_err(|_| bad("section too large"))?;
        let start = size
            .checked_next_multiple_of(align)
            .ok_or_else(|| bad("sections too large"))?;
        size = start
            .checked_add(len)
            .filter(|&e| e < 1 << 32)
            .ok_or_else(|| bad("sections too large"))?;
        if s.kind() != SectionKind::UninitializedData {
            let data = s.data().map_err(|e| bad(format!("section data: {e}")))?;
            if data.len() != len {
                return Err(bad("section data shorter than its size"));
            }
        }
        sections.push((s.index(), start));
    }
    let base_of = |idx: SectionIndex| sections.iter().find(|(i, _)| *i == idx).map(|&(_, o)| o);

    let mut relocs = Vec::new();
    for s in file.sections() {
        let Some(sbase) = base_of(s.index()) else {
            continue;
        };
        for (off, r) in s.relocations() {
            let (relative, bits) = match (r.kind(), r.encoding(), r.size()) {
                (RelocationKind::Absolute, RelocationEncoding::Generic, 64) => (false, 64),
                (
                    RelocationKind::Relative | RelocationKind::PltRelative,
                    RelocationEncoding::Generic | RelocationEncoding::X86Branch,
                    b @ (32 | 64),
                ) => (true, b),
                other => {
                    return Err(bad(format!(
                        "unsupported relocation {other:?} ({:?}) at {off:#x}",
                        r.flags()
                    )))
                }
            };
            if r.has_implicit_addend() {
                return Err(bad("relocations with implicit addends are not supported"));
            }
            let end = off
                .checked_add(bits as u64 / 8)
                .ok_or_else(|| bad("relocation offset overflows"))?;
            if end > s.size() {
                return Err(bad(format!(
                    "relocation at {off:#x} lies outside its section"
                )));
            }
            let target = match r.target() {
                RelocationTarget::Section(i) => base_of(i)
                    .ok_or_else(|| bad(format!("relocation to an unloaded section {}", i.0)))?,
                RelocationTarget::Symbol(i) => {
                    let sym = file
                        .symbol_by_index(i)
                        .map_err(|e| bad(format!("relocation symbol: {e}")))?;
                    let name = sym.name().unwrap_or("?");
                    let sec = sym
                        .section_index()
                        .ok_or_else(|| bad(format!("relocation to undefined symbol `{name}`")))?;
                    let sb = base_of(sec)
                        .ok_or_else(|| bad(format!("symbol `{name}` is in an unloaded section")))?;
                    let so = file.section_by_index(sec).map_err(|e| bad(e.to_string()))?;
                    let rel = sym
                        .address()
                        .checked_sub(so.address())
                        .filter(|&o| o <= so.size());
                    sb + rel
                        .ok_or_else(|| bad(format!("symbol `{name}` lies outside its section")))?
                        as usize
                }
                t => return Err(bad(format!("unsupported relocation target {t:?}"))),
            };
            relocs.push(Patch {
                place: sbase + off as usize,
                target,
                addend: r.addend(),
                relative,
                bits,
            });
        }
    }

    let mut kernels: Vec<Option<(usize, &'static str, String)>> = Vec::new();
    for sym in file.symbols() {
        // The file symbol (named after the module) and section symbols are not kernels.
        if matches!(sym.kind(), SymbolKind::File | SymbolKind::Section) {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        let Some(rest) = name.strip_prefix("vl3c_k") else {
            continue;
        };
        let (idx, kind_abi) = rest
            .split_once('_')
            .ok_or_else(|| bad(format!("bad kernel symbol `{name}`")))?;
        let idx: usize = idx
            .parse()
            .map_err(|_| bad(format!("bad kernel symbol `{name}`")))?;
        // `{kind}` then the compiled-in constants, each after `__` (see `KernelSpec::abi`).
        let (kind, abi) = KINDS
            .iter()
            .find_map(|k| {
                let abi = kind_abi.strip_prefix(k)?;
                (abi.is_empty() || abi.starts_with("__")).then_some((*k, abi.to_string()))
            })
            .ok_or_else(|| bad(format!("unknown kernel kind in `{name}`")))?;
        let sec = sym
            .section_index()
            .ok_or_else(|| bad(format!("kernel `{name}` is undefined")))?;
        let so = file.section_by_index(sec).map_err(|e| bad(e.to_string()))?;
        let sb = base_of(sec).filter(|_| so.kind() == SectionKind::Text);
        let sb = sb.ok_or_else(|| bad(format!("kernel `{name}` is not in a code section")))?;
        let off = sym
            .address()
            .checked_sub(so.address())
            .filter(|&o| o < so.size());
        let off = off.ok_or_else(|| bad(format!("kernel `{name}` lies outside its section")))?;
        if idx >= 1 << 20 {
            return Err(bad(format!("kernel index in `{name}` is implausible")));
        }
        if kernels.len() <= idx {
            kernels.resize(idx + 1, None);
        }
        if kernels[idx]
            .replace((sb + off as usize, kind, abi))
            .is_some()
        {
            return Err(bad(format!("kernel {idx} defined twice")));
        }
    }
    let kernels = kernels
        .into_iter()
        .enumerate()
        .map(|(i, k)| k.ok_or_else(|| bad(format!("kernel {i} is missing"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Plan {
        sections,
        size,
        relocs,
        kernels,
    })
}

/// Checks that `bytes` parse as a loadable kernel object whose relocations all resolve inside it.
pub(super) fn check_self_contained(bytes: &[u8]) -> Result<(), CodegenError> {
    let file = object::File::parse(bytes).map_err(|e| bad(e.to_string()))?;
    plan(&file).map(|_| ())
}

/// Kernels mapped into executable memory. Function pointers handed out are valid while this
/// value lives.
pub struct LoadedKernels {
    map: Mmap,
    kernels: Vec<(usize, &'static str, String)>,
    relocations: usize,
}

impl std::fmt::Debug for LoadedKernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedKernels")
            .field("bytes", &self.map.len())
            .field("kernels", &self.kernels)
            .finish()
    }
}

impl LoadedKernels {
    /// Maps and relocates the object made by [`compile_kernels`](super::compile_kernels).
    pub fn load(object_bytes: &[u8]) -> Result<Self, CodegenError> {
        let file = object::File::parse(object_bytes).map_err(|e| bad(e.to_string()))?;
        let plan = plan(&file)?;
        let mut map = MmapMut::map_anon(plan.size.max(1))?;
        for &(idx, start) in &plan.sections {
            let s = file.section_by_index(idx).map_err(|e| bad(e.to_string()))?;
            if s.kind() != SectionKind::UninitializedData {
                let data = s.data().map_err(|e| bad(e.to_string()))?;
                map[start..start + data.len()].copy_from_slice(data);
            }
        }
        let base = map.as_ptr() as u64;
        for p in &plan.relocs {
            let s = (base + p.target as u64).wrapping_add(p.addend as u64);
            let v = if p.relative {
                s.wrapping_sub(base + p.place as u64)
            } else {
                s
            };
            let dst = &mut map[p.place..p.place + p.bits as usize / 8];
            if p.bits == 32 {
                let v =
                    i32::try_from(v as i64).map_err(|_| bad("32-bit relocation out of range"))?;
                dst.copy_from_slice(&v.to_le_bytes());
            } else {
                dst.copy_from_slice(&v.to_le_bytes());
            }
        }
        let map = map.make_exec()?;
        Ok(LoadedKernels {
            map,
            kernels: plan.kernels,
            relocations: plan.relocs.len(),
        })
    }

    /// Number of kernels (indices 0..len).
    pub fn len(&self) -> usize {
        self.kernels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kernels.is_empty()
    }

    /// The kind name of kernel `index` (as in its symbol).
    pub fn kind(&self, index: usize) -> Option<&'static str> {
        self.kernels.get(index).map(|k| k.1)
    }

    /// Entry address of kernel `index`, whatever its kind (for callers with their own ABI table).
    pub fn address(&self, index: usize) -> Option<*const u8> {
        self.kernels
            .get(index)
            .map(|&(off, ..)| self.map.as_ptr().wrapping_add(off))
    }

    /// How many relocations were applied when loading.
    pub fn relocations_applied(&self) -> usize {
        self.relocations
    }

    /// Checks that kernel i has the kind and the compiled-in constants (row width, eps; its
    /// symbol carries them) of `specs[i]`, for every i, and no more kernels exist.
    pub fn check_specs(&self, specs: &[KernelSpec]) -> Result<(), CodegenError> {
        if specs.len() != self.kernels.len() {
            return Err(bad(format!(
                "object has {} kernels, expected {}",
                self.kernels.len(),
                specs.len()
            )));
        }
        for (i, s) in specs.iter().enumerate() {
            let (_, kind, abi) = &self.kernels[i];
            if *kind != s.kind() || *abi != s.abi() {
                return Err(CodegenError::Kernel {
                    index: i,
                    reason: format!("is {kind}{abi}, expected {}{}", s.kind(), s.abi()),
                });
            }
        }
        Ok(())
    }

    /// Entry address of kernel `index` after checking its kind is one of `kinds`.
    fn entry(&self, index: usize, kinds: &[&str]) -> Result<*const u8, CodegenError> {
        let &(off, kind, _) = self
            .kernels
            .get(index)
            .ok_or_else(|| CodegenError::Kernel {
                index,
                reason: format!("out of range ({} kernels)", self.len()),
            })?;
        if !kinds.contains(&kind) {
            return Err(CodegenError::Kernel {
                index,
                reason: format!("is {kind}, not {}", kinds.join("/")),
            });
        }
        // In bounds: `plan` checked every kernel symbol lies inside a loaded section.
        Ok(self.map.as_ptr().wrapping_add(off))
    }

    pub fn layer_norm(&self, index: usize) -> Result<LayerNormFn, CodegenError> {
        // SAFETY: the address is the start of a function compiled with exactly this signature
        // (the kind in its symbol fixes the ABI), and stays mapped executable while `self` lives.
        self.entry(index, &["layer_norm"])
            .map(|p| unsafe { std::mem::transmute::<*const u8, LayerNormFn>(p) })
    }

    pub fn rms_norm(&self, index: usize) -> Result<RmsNormFn, CodegenError> {
        // SAFETY: as in `layer_norm`.
        self.entry(index, &["rms_norm"])
            .map(|p| unsafe { std::mem::transmute::<*const u8, RmsNormFn>(p) })
    }

    pub fn softmax(&self, index: usize) -> Result<SoftmaxFn, CodegenError> {
        // SAFETY: as in `layer_norm`.
        self.entry(index, &["softmax"])
            .map(|p| unsafe { std::mem::transmute::<*const u8, SoftmaxFn>(p) })
    }

    pub fn rope(&self, index: usize) -> Result<RopeFn, CodegenError> {
        // SAFETY: as in `layer_norm`.
        self.entry(index, &["rope"])
            .map(|p| unsafe { std::mem::transmute::<*const u8, RopeFn>(p) })
    }

    /// `gelu_tanh`, `gelu_erf` or `silu`.
    pub fn unary(&self, index: usize) -> Result<UnaryFn, CodegenError> {
        // SAFETY: as in `layer_norm`.
        self.entry(index, &["gelu_tanh", "gelu_erf", "silu"])
            .map(|p| unsafe { std::mem::transmute::<*const u8, UnaryFn>(p) })
    }

    /// `swiglu` or `add`.
    pub fn binary(&self, index: usize) -> Result<BinaryFn, CodegenError> {
        // SAFETY: as in `layer_norm`.
        self.entry(index, &["swiglu", "add"])
            .map(|p| unsafe { std::mem::transmute::<*const u8, BinaryFn>(p) })
    }

    pub fn add_bias(&self, index: usize) -> Result<AddBiasFn, CodegenError> {
        // SAFETY: as in `layer_norm`.
        self.entry(index, &["add_bias"])
            .map(|p| unsafe { std::mem::transmute::<*const u8, AddBiasFn>(p) })
    }

    pub fn attention_softmax(&self, index: usize) -> Result<AttentionSoftmaxFn, CodegenError> {
        // SAFETY: as in `layer_norm`.
        self.entry(index, &["attention_softmax"])
            .map(|p| unsafe { std::mem::transmute::<*const u8, AttentionSoftmaxFn>(p) })
    }
}

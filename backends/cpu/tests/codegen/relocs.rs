//! The loader's relocation paths, on hand-made x86-64 objects (Cranelift's own objects carry
//! none today): a PC-relative load from `.rodata` and an absolute 64-bit address of it.

#![cfg(all(target_arch = "x86_64", target_os = "linux"))]

use object::write::{Object, Relocation, StandardSection, Symbol, SymbolSection};
use object::{
    Architecture, BinaryFormat, Endianness, RelocationEncoding, RelocationFlags, RelocationKind,
    SymbolFlags, SymbolKind, SymbolScope,
};
use vl3c_cpu::codegen::LoadedKernels;

fn func(obj: &mut Object, name: &str, text: object::write::SectionId, code: &[u8]) -> u64 {
    let off = obj.append_section_data(text, code, 16);
    obj.add_symbol(Symbol {
        name: name.as_bytes().to_vec(),
        value: off,
        size: code.len() as u64,
        kind: SymbolKind::Text,
        scope: SymbolScope::Dynamic,
        weak: false,
        section: SymbolSection::Section(text),
        flags: SymbolFlags::None,
    });
    off
}

fn reloc(
    kind: RelocationKind,
    size: u8,
    offset: u64,
    symbol: object::write::SymbolId,
    addend: i64,
) -> Relocation {
    Relocation {
        offset,
        symbol,
        addend,
        flags: RelocationFlags::Generic {
            kind,
            encoding: RelocationEncoding::Generic,
            size,
        },
    }
}

#[test]
fn pc_relative_and_absolute_relocations_to_rodata() {
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let text = obj.section_id(StandardSection::Text);
    let ro = obj.section_id(StandardSection::ReadOnlyData);
    let data_off = obj.append_section_data(
        ro,
        &[0u8; 12]
            .iter()
            .chain(&2.5f32.to_le_bytes())
            .copied()
            .collect::<Vec<_>>(),
        16,
    );
    let ro_sym = obj.section_symbol(ro);
    // movss xmm0, [rip + disp32]; ret — disp32 patched PC-relative (addend −4: RIP is past it).
    let f0 = func(
        &mut obj,
        "vl3c_k0_add",
        text,
        &[0xF3, 0x0F, 0x10, 0x05, 0, 0, 0, 0, 0xC3],
    );
    obj.add_relocation(
        text,
        reloc(
            RelocationKind::Relative,
            32,
            f0 + 4,
            ro_sym,
            data_off as i64 + 12 - 4,
        ),
    )
    .unwrap();
    // movabs rax, imm64; movss xmm0, [rax]; ret — imm64 patched absolute.
    let f1 = func(
        &mut obj,
        "vl3c_k1_add",
        text,
        &[
            0x48, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0xF3, 0x0F, 0x10, 0x00, 0xC3,
        ],
    );
    obj.add_relocation(
        text,
        reloc(
            RelocationKind::Absolute,
            64,
            f1 + 2,
            ro_sym,
            data_off as i64 + 12,
        ),
    )
    .unwrap();
    let bytes = obj.write().unwrap();

    let k = LoadedKernels::load(&bytes).unwrap();
    assert_eq!(k.relocations_applied(), 2);
    for i in 0..2 {
        // SAFETY: both functions above are `fn() -> f32` in the C ABI.
        let f: extern "C" fn() -> f32 = unsafe { std::mem::transmute(k.address(i).unwrap()) };
        assert_eq!(f(), 2.5, "kernel {i}");
    }
}

#[test]
fn undefined_symbols_and_missing_kernels_are_errors() {
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let text = obj.section_id(StandardSection::Text);
    // call rel32 to an undefined `fmaf`.
    let f0 = func(&mut obj, "vl3c_k0_add", text, &[0xE8, 0, 0, 0, 0, 0xC3]);
    let ext = obj.add_symbol(Symbol {
        name: b"fmaf".to_vec(),
        value: 0,
        size: 0,
        kind: SymbolKind::Text,
        scope: SymbolScope::Dynamic,
        weak: false,
        section: SymbolSection::Undefined,
        flags: SymbolFlags::None,
    });
    obj.add_relocation(
        text,
        reloc(RelocationKind::PltRelative, 32, f0 + 1, ext, -4),
    )
    .unwrap();
    let err = LoadedKernels::load(&obj.write().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("fmaf"), "{err}");

    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let text = obj.section_id(StandardSection::Text);
    func(&mut obj, "vl3c_k1_add", text, &[0xC3]);
    let err = LoadedKernels::load(&obj.write().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("kernel 0 is missing"), "{err}");
}

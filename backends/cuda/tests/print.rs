//! Snapshots of the printed CUDA C++ of the sample kernels: any change to how the printer spells
//! a construct shows up here for review.

mod print_samples;

use vl3c_cuda::print::{print_kernel, print_module};

#[test]
fn block_sum_prints() {
    insta::assert_snapshot!(print_kernel(&print_samples::block_sum()));
}

#[test]
fn softmax_bf16_prints() {
    insta::assert_snapshot!(print_kernel(&print_samples::softmax_bf16()));
}

#[test]
fn mma_tile_prints() {
    insta::assert_snapshot!(print_module(&[print_samples::mma_tile()]));
}

#[test]
fn every_op_prints() {
    insta::assert_snapshot!(print_kernel(&print_samples::every_op()));
}

#[test]
fn scale_bf16x8_prints() {
    insta::assert_snapshot!(print_kernel(&print_samples::scale_bf16x8()));
}

#[test]
fn awkward_names_print() {
    insta::assert_snapshot!(print_kernel(&print_samples::awkward_names()));
}

#[test]
fn module_includes_only_bf16_and_adds_the_mma_helper_only_when_used() {
    let without = print_module(&[print_samples::block_sum()]);
    assert!(without.contains("#include <cuda_bf16.h>"));
    assert_eq!(without.matches("#include").count(), 1);
    assert!(!without.contains("mma.sync"));
    let with = print_module(&print_samples::all());
    assert_eq!(
        with.matches("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32")
            .count(),
        1
    );
    assert_eq!(
        with.matches("extern \"C\" __global__").count(),
        print_samples::all().len()
    );
}

#[test]
#[should_panic(expected = "outside the block that declares it")]
fn a_variable_escaping_its_block_is_refused() {
    use vl3c_cuda::kir::{Access, Expr, KernelBuilder, Ty};
    let mut b = KernelBuilder::new("escape", [32, 1, 1]);
    let out = b.buffer("out", Ty::F32, Access::Write);
    let mut inner = Expr::f32(0.0);
    b.if_(b.lane().eq(Expr::u32(0)), |b| {
        inner = b.let_("inner", Expr::f32(1.0))
    });
    b.store(out, Expr::i64(0), inner);
    print_kernel(&b.finish());
}

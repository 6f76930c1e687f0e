#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vl3c_fuzz_targets::eval_inputs(data));

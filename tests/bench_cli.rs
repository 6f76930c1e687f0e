//! `vl3c bench` contract: the JSON keys scripts read, and one-line errors. No timing assertions:
//! speed is what the bench measures, never what a test checks.

mod common;
use common::{assert_one_line_error, fixture, vl3c};
use std::process::Output;

const TINY: [&str; 10] = [
    "--image-size",
    "56",
    "--context",
    "16",
    "--decode-tokens",
    "4",
    "--repeat",
    "1",
    "--warmup",
    "0",
];

fn bench(extra: &[&str]) -> Output {
    let dir = fixture("image_tied_f32");
    let mut args = vec!["bench", "--model", dir.to_str().unwrap()];
    // `extra` overrides a TINY flag by name (clap refuses a flag given twice).
    for pair in TINY.chunks(2) {
        if !extra.contains(&pair[0]) {
            args.extend(pair);
        }
    }
    // Given limits skip the probes (a 256 MiB buffer) that tests do not need.
    for pair in [["--bandwidth-gbs", "10"], ["--peak-gflops", "100"]] {
        if !extra.contains(&pair[0]) {
            args.extend(pair);
        }
    }
    args.extend(extra);
    vl3c(&args)
}

#[test]
fn json_has_the_four_keys_with_positive_numbers() {
    let o = bench(&["--json", "--threads", "1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("stdout is one JSON object");
    for key in ["vision_s", "prefill_s", "decode_tok_s", "peak_rss_bytes"] {
        let x = v[key]
            .as_f64()
            .unwrap_or_else(|| panic!("`{key}` is a number in {v}"));
        assert!(x > 0.0 && x.is_finite(), "`{key}` = {x}");
    }
    let limits = &v["limits"];
    for key in [
        "vision_s_bound",
        "prefill_s_bound",
        "decode_tok_s_bound",
        "decode_bytes_per_token",
    ] {
        assert!(
            limits[key].as_f64().is_some_and(|x| x > 0.0),
            "limits.{key} in {v}"
        );
    }
    assert_eq!(limits["bandwidth_gbs"], 10.0);
    assert_eq!(v["config"]["patches"], 16);
    assert_eq!(v["config"]["context"], 16);
}

#[test]
fn table_names_every_phase() {
    let o = bench(&["--threads", "1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    for phase in ["vision", "prefill", "decode", "peak RSS", "limits"] {
        assert!(out.contains(phase), "`{phase}` missing from:\n{out}");
    }
}

#[test]
fn bad_flags_are_one_line_errors() {
    assert_one_line_error(&bench(&["--image-size", "50"]), "--image-size 50");
    assert_one_line_error(&bench(&["--context", "0"]), "--context");
    assert_one_line_error(&bench(&["--repeat", "0"]), "--repeat");
    assert_one_line_error(&bench(&["--peak-gflops", "0"]), "--peak-gflops");
    assert_one_line_error(&vl3c(&["bench", "--context", "4"]), "--model");
    assert_one_line_error(
        &vl3c(&["bench", "--model", "/nonexistent/ckpt"]),
        "/nonexistent/ckpt",
    );
    let dir = fixture("image_tied_f32");
    let dir = dir.to_str().unwrap();
    assert_one_line_error(
        &vl3c(&["bench", "--model", dir, "--engine", dir]),
        "--engine",
    );
    assert_one_line_error(
        &vl3c(&["bench", "--engine", "/nonexistent/engine"]),
        "/nonexistent/engine",
    );
}

/// `vl3c bench --engine E --json --threads 1` over an engine compiled from the tiny fixture,
/// with TINY's flags unless `extra` names them.
fn engine_bench_json(extra: &[&str]) -> serde_json::Value {
    let dir = fixture("image_tied_f32");
    let tmp = tempfile::tempdir().unwrap();
    let engine = tmp.path().join("engine");
    let o = vl3c(&[
        "compile",
        "--model",
        dir.to_str().unwrap(),
        "--out",
        engine.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut args = vec![
        "bench",
        "--engine",
        engine.to_str().unwrap(),
        "--json",
        "--threads",
        "1",
    ];
    for pair in TINY.chunks(2) {
        if !extra.contains(&pair[0]) {
            args.extend(pair);
        }
    }
    args.extend(extra);
    let o = vl3c(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("stdout is one JSON object")
}

#[test]
fn engine_bench_reports_the_same_keys() {
    let v = engine_bench_json(&["--bandwidth-gbs", "10", "--peak-gflops", "100"]);
    for key in ["vision_s", "prefill_s", "decode_tok_s", "peak_rss_bytes"] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "`{key}` in {v}");
    }
    assert_eq!(v["config"]["backend"], "engine");
}

#[test]
fn engine_decode_is_paired_with_the_bandwidth_probed_beside_it() {
    // Five steps: two stretches between probes (four steps, then one). No --bandwidth-gbs, so
    // the engine's own weights are probed.
    let v = engine_bench_json(&[
        "--decode-tokens",
        "5",
        "--repeat",
        "3",
        "--peak-gflops",
        "100",
    ]);
    let list = |key: &str| -> Vec<f64> {
        v["runs"][key]
            .as_array()
            .unwrap_or_else(|| panic!("runs.{key} is a list in {v}"))
            .iter()
            .map(|x| x.as_f64().expect("a number"))
            .collect()
    };
    let (gbs, tok_s, paired) = (
        list("bandwidth_gbs"),
        list("decode_tok_s"),
        list("decode_of_bound"),
    );
    assert_eq!((gbs.len(), tok_s.len(), paired.len()), (3, 3, 3), "{v}");
    let bytes = v["limits"]["decode_bytes_per_token"].as_f64().unwrap();
    for i in 0..3 {
        assert!(gbs[i] > 0.0 && gbs[i].is_finite(), "{v}");
        // Each run's decode against its own probes, not the median's.
        let want = tok_s[i] * bytes / (gbs[i] * 1e9);
        assert!((paired[i] - want).abs() <= 1e-9 * want, "run {i}: {v}");
    }
    let mut sorted = paired.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(v["decode_of_bound"].as_f64(), Some(sorted[1]), "{v}");
    let mut sorted = gbs.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(
        v["limits"]["bandwidth_gbs"].as_f64(),
        Some(sorted[1]),
        "{v}"
    );
}
